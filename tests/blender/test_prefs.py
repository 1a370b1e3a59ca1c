"""Registration, the add-on preferences, and the managed worker environment."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import bpy
import pytest

from shape_e_blender import blender
from shape_e_blender.blender import prefs, tasks
from shape_e_blender.client.process import venv_python
from tests.blender.addon import ROOT, disable_addon, enable_addon
from tests.support import WORKER_PYTHON


def _our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shape_e")]


def test_register_unregister_twice_with_a_running_worker_leaves_nothing_behind(tmp_path):
    for _ in range(2):
        enable_addon()
        assert hasattr(bpy.types, "SHAPE_E_PT_panel")
        assert hasattr(bpy.types.Scene, "shape_e")
        assert bpy.ops.shape_e.text_to_mesh.poll()
        p = bpy.context.preferences.addons[ROOT].preferences
        p.worker_python = WORKER_PYTHON
        p.jobs_dir = str(tmp_path / "jobs")
        client = prefs.client()
        client.start()  # the process and its reader threads are up
        popen = client._worker.popen
        assert _our_threads()
        disable_addon()
        assert popen.poll() is not None, "unregister must stop the worker"
        assert _our_threads() == []
        assert not hasattr(bpy.types, "SHAPE_E_PT_panel")
        assert not hasattr(bpy.types.Scene, "shape_e")
        assert ROOT not in bpy.context.preferences.addons
        assert tasks.current_client() is None


def test_preference_names_defaults_and_enum_identifiers():
    enable_addon()
    try:
        p = bpy.context.preferences.addons[ROOT].preferences
        assert type(p).bl_idname == ROOT
        props = p.bl_rna.properties
        for name in ("worker_python", "text_model", "image_model", "device", "precision"):
            assert name in props, name
        assert {"keep_alive", "jobs_dir", "env_dir"} <= set(props.keys())
        assert [i.identifier for i in props["device"].enum_items] == ["AUTO", "CUDA", "MPS", "CPU"]
        assert [i.identifier for i in props["precision"].enum_items] == [
            "AUTO",
            "FP32",
            "FP16",
            "BF16",
        ]
        assert (p.worker_python, p.text_model, p.image_model) == (
            "",
            "openai/shap-e",
            "openai/shap-e-img2img",
        )
        assert (p.device, p.precision, p.keep_alive, p.jobs_dir) == ("AUTO", "AUTO", True, "")
    finally:
        disable_addon()


def test_register_with_an_extension_root_package():
    # Installed, the root package is bl_ext.<repo>.shape_e_blender; preferences use that key.
    root = "bl_ext.user_default.shape_e_blender"
    blender.register(root)
    try:
        entry = bpy.context.preferences.addons.get(root)
        assert entry is not None and type(entry.preferences).bl_idname == root
        assert prefs.get().text_model == "openai/shap-e"
    finally:
        blender.unregister()
    assert bpy.context.preferences.addons.get(root) is None
    prefs.set_root(ROOT)


def test_worker_python_is_the_managed_environment_unless_set(tmp_path):
    enable_addon()
    try:
        p = prefs.get()
        p.env_dir = str(tmp_path / "env")
        assert prefs.worker_python(p) == venv_python(tmp_path / "env")
        p.env_dir = ""
        managed = prefs.env_dir(p)
        assert ROOT in managed.parts and managed.name == "worker-env"
        p.worker_python = sys.executable
        assert prefs.worker_python(p).samefile(sys.executable)
    finally:
        disable_addon()


@pytest.mark.parametrize("online", [False, True])
def test_download_models_needs_online_access(online, tmp_path):
    enable_addon()
    system = bpy.context.preferences.system
    try:
        p = prefs.get()
        p.worker_python = WORKER_PYTHON
        p.jobs_dir = str(tmp_path / "jobs")
        p.text_model = str(tmp_path / "missing-model")
        p.image_model = ""
        system.use_online_access = online
        # In background mode an operator's error report raises, which is what a script wants.
        with pytest.raises(RuntimeError) as info:
            bpy.ops.shape_e.download_models()
        if online:
            # Allowed, so the worker tried: a folder that does not exist is its error to report.
            assert tasks.status.kind == "download" and tasks.status.state == "error"
            assert tasks.status.error in str(info.value) and tasks.status.hint
        else:
            assert "online access is off" in str(info.value)
            assert tasks.current_client() is None  # refused before any worker started
    finally:
        system.use_online_access = False
        disable_addon()


@pytest.mark.main_blender
def test_download_models_asks_the_worker_for_both_kinds(
    tmp_path, worker_text_model, worker_image_model
):
    enable_addon()
    system = bpy.context.preferences.system
    try:
        p = prefs.get()
        p.worker_python, p.jobs_dir = WORKER_PYTHON, str(tmp_path / "jobs")
        # Local folders are complete already: the worker answers without any network.
        p.text_model, p.image_model = str(worker_text_model), str(worker_image_model)
        system.use_online_access = True
        assert bpy.ops.shape_e.download_models() == {"FINISHED"}
        assert (tasks.status.kind, tasks.status.state) == ("download", "done")
        results = [r.result for r in tasks.last().requests]
        assert [r["kind"] for r in results] == ["text", "image"]
        assert [Path(r["path"]) for r in results] == [worker_text_model, worker_image_model]
    finally:
        system.use_online_access = False
        disable_addon()
