"""The base of every operator that starts a task: one busy check, one error report, and one rule
for whether the call blocks.

In the UI an operator starts its task and returns at once; a timer polls it (tasks.py). With
``blocking`` (by default: in background mode, i.e. ``blender -b`` or bpy as a module) it polls in
a loop and returns once the task has ended, so scripts and batch jobs get their objects back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import bpy
from bpy.props import BoolProperty

from ...core.errors import CANCELLED, ShapEError, invalid
from .. import tasks
from ..props import SKIP_SAVE_HIDDEN

# Type-checking sees the mixin as the Operator it always joins (report, properties, as_keywords).
_Mixin = bpy.types.Operator if TYPE_CHECKING else object


def require_online(field: str, otherwise: str) -> None:
    """Refuse to download when Blender's online access is off (Preferences > System)."""
    if not bpy.app.online_access:
        raise invalid(
            field,
            "online access is off, so Blender may not download",
            f"allow it in Preferences > System, or {otherwise}",
        )


class TaskOperator(_Mixin):
    """Mixin for operators that run a task; ``run()`` is their whole execute()."""

    blocking: BoolProperty(
        name="Blocking",
        description=(
            "Wait for the result before returning (default: on in background mode, off in the UI)"
        ),
        default=False,
        options=SKIP_SAVE_HIDDEN,
    )

    kind = "generate"  # the task kind the status shows (generate, download, check, setup)
    # Operators that download say what to do instead when Blender's online access is off.
    offline_instead = ""
    started = ""  # what the UI reports when the task has started (default execute())

    def execute(self, context: bpy.types.Context) -> set[str]:
        return self.run(context, lambda: self.task(context), self.started)

    def task(self, context: bpy.types.Context) -> tasks.Task:
        """The task to start (operators that keep the default execute() define it)."""
        raise NotImplementedError

    def should_block(self) -> bool:
        """``blocking`` when the caller set it; otherwise background mode blocks."""
        if self.properties.is_property_set("blocking"):
            return self.blocking
        return bpy.app.background

    def fail(self, err: ShapEError, label: str = "") -> set[str]:
        """Show ``err`` in the panel and report it (a background script gets it raised)."""
        tasks.show_error(err, self.kind, label)
        self.report({"ERROR"}, str(err))
        return {"CANCELLED"}

    def run(
        self,
        context: bpy.types.Context,
        start: Callable[[], tasks.Task],
        started: str = "",
        label: str = "",
    ) -> set[str]:
        """Start the task ``start()`` makes, then return at once or wait for its end.

        ``start`` raises ShapEError for anything wrong with the request: that is reported with
        its field and hint, and nothing starts. ``started`` is the UI's "working on it" report.
        """
        if tasks.busy():
            self.report({"ERROR"}, tasks.BUSY_MESSAGE)
            return {"CANCELLED"}
        try:
            if self.offline_instead:
                require_online("online_access", self.offline_instead)
            task = start()
        except ShapEError as err:
            return self.fail(err, label)
        tasks.begin(task)
        if not self.should_block():
            tasks.ensure_timer()
            if started:
                self.report({"INFO"}, started)
            return {"FINISHED"}
        done = tasks.run_blocking(context)
        if done.error is not None:
            level = "WARNING" if done.error.code == CANCELLED else "ERROR"
            self.report({level}, str(done.error))
            return {"CANCELLED"}
        for warning in done.warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, tasks.status.message)
        return {"FINISHED"}


class PicksFile(_Mixin):
    """Mixin for operators with a ``filepath``: invoked without one, they open the file browser
    first (Blender then calls execute() with the chosen file)."""

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self.filepath:  # each operator declares its own filepath
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}
