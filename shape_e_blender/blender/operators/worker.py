"""Operators that manage the worker: check it, release it, download the models, set up the
managed worker environment, and cancel whatever task runs."""

from __future__ import annotations

import bpy

from ...client.envsetup import EnvSetup, requirements_for_machine, vendor_dir
from .. import prefs, tasks
from ..tasks import Task
from .base import TaskOperator


class SHAPE_E_OT_check_worker(TaskOperator, bpy.types.Operator):
    """Start the worker and show its library versions and devices"""

    bl_idname = "shape_e.check_worker"
    bl_label = "Check Worker"
    kind = "check"

    def task(self, context: bpy.types.Context) -> Task:
        return Task("check", [prefs.client(context).start()], label="worker")


class SHAPE_E_OT_release_worker(bpy.types.Operator):
    """Stop the worker process now, freeing its memory (a running job is lost)"""

    bl_idname = "shape_e.release_worker"
    bl_label = "Release Worker"

    def execute(self, context: bpy.types.Context) -> set[str]:
        # The UI must not wait for the process; a background script may rely on it being gone.
        stopped = tasks.release(wait=bpy.app.background)
        self.report({"INFO"}, "worker stopped" if stopped else "no worker was running")
        return {"FINISHED"}


class SHAPE_E_OT_download_models(TaskOperator, bpy.types.Operator):
    """Download the text and image models into the Hugging Face cache (about 3 GB each)"""

    bl_idname = "shape_e.download_models"
    bl_label = "Download Models"
    kind = "download"
    offline_instead = "put the models in a folder and enter it as the model"

    def task(self, context: bpy.types.Context) -> Task:
        p = prefs.get(context)
        models = {"text": p.text_model.strip(), "image": p.image_model.strip()}
        client = prefs.client(context)
        requests = [client.download(m, kind) for kind, m in models.items() if m]
        return Task("download", requests, label="models")


class SHAPE_E_OT_setup_env(TaskOperator, bpy.types.Operator):
    """Create the worker environment (a Python venv with torch and diffusers, a few GB)"""

    bl_idname = "shape_e.setup_worker_env"
    bl_label = "Set Up Worker Environment"
    kind = "setup"
    offline_instead = "create an environment by hand (vendor/README.md) and set worker_python"

    started = "Setting up the worker environment"

    def task(self, context: bpy.types.Context) -> Task:
        target = prefs.env_dir(prefs.get(context))
        folder = vendor_dir()
        # pip must not replace files under a running worker.
        tasks.release(wait=bpy.app.background)
        # The GPU probe (nvidia-smi) runs on the setup's thread, not here on the UI thread.
        setup = EnvSetup(target, lambda: requirements_for_machine(folder)).start()
        return Task("setup", label=str(target), setup=setup, verb="Set up")


class SHAPE_E_OT_cancel(bpy.types.Operator):
    """Cancel the running Shap-E job (a generation, a download or the environment setup)"""

    bl_idname = "shape_e.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _cancel(self)


class SHAPE_E_OT_cancel_setup(bpy.types.Operator):
    """Stop setting up the worker environment"""

    bl_idname = "shape_e.cancel_worker_env"
    bl_label = "Cancel Setup"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        task = tasks.active()
        return task is not None and task.kind == "setup"

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _cancel(self)


def _cancel(op: bpy.types.Operator) -> set[str]:
    if not tasks.cancel():
        op.report({"WARNING"}, "no Shap-E job is running")
        return {"CANCELLED"}
    op.report({"INFO"}, "Shap-E: cancelling")
    return {"FINISHED"}


CLASSES = (
    SHAPE_E_OT_check_worker,
    SHAPE_E_OT_release_worker,
    SHAPE_E_OT_download_models,
    SHAPE_E_OT_setup_env,
    SHAPE_E_OT_cancel,
    SHAPE_E_OT_cancel_setup,
)
