"""What the headless command (scene_cli) shows on the console while an operator blocks, and how
it takes Ctrl+C there: a progress line, error reports printed once, interrupts as cancels."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class _DropErrorReports:
    """sys.stdout, without the operator's error reports.

    When an operator returns, bpy.ops writes each of its reports to sys.stdout, one write per
    report ("Error: <message> (<hint>)", cut at 1000 characters and followed by "... truncated"),
    and Blender offers no switch for it. This command prints the error itself, once, with the
    hint on its own line; everything else (warnings included) passes through as it is written.
    """

    def __init__(self, real: TextIO) -> None:
        self.real = real
        self.dropping = False

    def write(self, text: str) -> int:
        self.dropping = text.startswith("Error: ") or (self.dropping and text == "... truncated")
        return len(text) if self.dropping else self.real.write(text)

    def flush(self) -> None:
        self.real.flush()


@contextlib.contextmanager
def errors_unprinted() -> Iterator[None]:
    real = sys.stdout
    sys.stdout = _DropErrorReports(real)  # write() and flush() are all that bpy.ops calls
    try:
        yield
    finally:
        sys.stdout = real


@contextlib.contextmanager
def interrupts_cancel(tasks: Any) -> Iterator[list[int]]:
    """Ctrl+C or SIGTERM while an operator blocks cancels its task (the job ends with its
    error.json) and lets the operator return; the list then holds the signal. A KeyboardInterrupt
    raised inside an operator was printed by Blender as a traceback, and the build was saved as
    failed. A second signal interrupts at once."""
    got: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if got:
            raise KeyboardInterrupt
        got.append(signum)  # only noted: the main thread may be inside the client here

    shown = tasks.watch

    def watch(status: Any) -> None:  # called after each poll of the blocking run
        if got and status.state == "running":
            tasks.cancel()
        if shown is not None:
            shown(status)

    before = {n: signal.signal(n, handler) for n in (signal.SIGINT, signal.SIGTERM)}
    tasks.watch = watch
    try:
        yield got
    finally:
        tasks.watch = shown
        for number, previous in before.items():
            signal.signal(number, previous)


class ProgressLine:
    """The running task's progress on stderr: one line redrawn in place on a terminal, else a
    line each time the object or the stage changes (a log stays short)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last: object = None

    def show(self, status: Any) -> None:
        if status.state not in ("running", "cancelling"):
            return
        text = status.progress_text()
        if self.tty:
            filled = round(status.fraction * 24)
            self.out.write(f"\r[{'#' * filled}{'.' * (24 - filled)}] {text[:90]:<90}")
            self.out.flush()
            return
        head = (status.part, status.stage)
        if head != self.last:
            self.last = head
            print(text, file=self.out, flush=True)
