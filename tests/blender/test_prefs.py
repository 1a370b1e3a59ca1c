"""Registration, the add-on preferences, and the managed worker environment."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from shape_e_blender import blender
from shape_e_blender.blender import jobs, prefs, setup_env
from shape_e_blender.blender.client import venv_python
from shape_e_blender.core.errors import CANCELLED, JOB_FAILED

from .fixtures_client import (  # noqa: F401  (fixtures are found by name)
    ROOT,
    WORKER_PYTHON,
    bpy,
    disable_addon,
    enable_addon,
    worker_image_model_fixture,
    worker_text_model_fixture,
)


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
        assert jobs.current_client() is None


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


def test_requirements_for_this_machine_come_from_vendor_worker():
    folder = setup_env.vendor_dir()
    assert (folder / "base.txt").is_file()
    chosen = setup_env.requirements_for_machine(folder)
    assert chosen.parent == folder and chosen.name in {"cpu.txt", "cuda.txt", "mps.txt"}
    assert "torch==" in chosen.read_text()


def test_env_setup_creates_a_venv_that_runs(tmp_path):
    # An empty requirements file keeps this offline; the real pins install the same way.
    req = tmp_path / "req.txt"
    req.write_text("# nothing to install\n")
    setup = setup_env.EnvSetup(tmp_path / "env", req, verify=("json", "sqlite3")).start()
    setup.join(180)
    assert setup.poll() and setup.error is None, setup.error
    assert setup.fraction == 1.0 and setup.stage == "checking"
    assert venv_python(tmp_path / "env").is_file()
    assert setup.last_line == "ok"


def test_env_setup_failure_keeps_the_tail_and_a_hint(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("--no-such-pip-option\n")
    setup = setup_env.EnvSetup(tmp_path / "env", req, verify=()).start()
    setup.join(180)
    assert setup.poll() and setup.error is not None
    assert setup.error.code == JOB_FAILED and setup.stage == "installing"
    assert "no-such-pip-option" in setup.error.message
    assert "worker_python" in setup.error.hint


def test_env_setup_cancel_stops_the_subprocess_and_its_thread_reaps_it(tmp_path):
    req = tmp_path / "req.txt"
    req.write_text("")
    setup = setup_env.EnvSetup(tmp_path / "env", req).start()
    deadline = time.monotonic() + 60
    while setup._proc is None:  # "python -m venv" is running
        assert time.monotonic() < deadline and setup.is_alive()
        time.sleep(0.01)
    setup.cancel()  # the Cancel button
    setup.join(60)
    assert not setup.is_alive()
    assert setup._proc.poll() is not None  # the setup's thread reaped what it started
    assert setup.poll() and setup.error is not None and setup.error.code == CANCELLED


def test_env_setup_picks_its_requirements_on_its_own_thread(tmp_path):
    # The operator passes requirements_for_machine (it runs nvidia-smi, which can take seconds)
    # as a function, so that the UI thread never runs it.
    req = tmp_path / "req.txt"
    req.write_text("# nothing to install\n")
    picked_on: list[threading.Thread] = []
    chosen: list[Path] = []

    def pick() -> Path:
        picked_on.append(threading.current_thread())
        chosen.append(setup_env.requirements_for_machine(setup_env.vendor_dir()))  # the probe
        return req  # an empty file keeps this test offline

    setup = setup_env.EnvSetup(tmp_path / "env", pick, verify=())
    assert setup.requirements is None  # not known before the thread runs
    setup.start().join(180)
    assert setup.poll() and setup.error is None, setup.error
    assert [t.name for t in picked_on] == ["shape_e-setup"]
    assert chosen[0].name in {"cpu.txt", "cuda.txt", "mps.txt"}
    assert setup.requirements == req


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
            assert jobs.status.kind == "download" and jobs.status.state == "error"
            assert jobs.status.error in str(info.value) and jobs.status.hint
        else:
            assert "online access is off" in str(info.value)
            assert jobs.current_client() is None  # refused before any worker started
    finally:
        system.use_online_access = False
        disable_addon()


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
        assert (jobs.status.kind, jobs.status.state) == ("download", "done")
        results = [r.result for r in jobs.last().requests]
        assert [r["kind"] for r in results] == ["text", "image"]
        assert [Path(r["path"]) for r in results] == [worker_text_model, worker_image_model]
    finally:
        system.use_online_access = False
        disable_addon()
