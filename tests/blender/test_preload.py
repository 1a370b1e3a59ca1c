"""Loading the models in advance (preload.py) with real bpy and the real worker: the UI's path
is taken with ``background=False`` (module mode is background mode, where it never happens)."""

from __future__ import annotations

import time

import bpy
import pytest

from shape_e_blender.blender import preload, tasks
from tests.blender.addon import drain
from tests.support import FAST

FIRST_TIME = {"start", "import", "load"}


@pytest.fixture
def cold(scene, text_model):
    """No worker running and nothing loaded in advance yet this session."""
    tasks.release(wait=True)
    tasks.tick()
    preload.forget()
    tasks.warming = None
    yield scene
    preload.forget()
    tasks.warming = None


def _wait_for_the_load(timeout: float = 300.0) -> None:
    """Run preload's timer as Blender would (module mode never fires timers)."""
    deadline = time.monotonic() + timeout
    while preload.timer() is not None:
        assert time.monotonic() < deadline, f"the load in advance did not end: {tasks.warming}"
        time.sleep(0.1)


def test_the_panels_first_draw_loads_the_model_and_generate_then_pays_no_start_and_no_load(
    cold, text_model
):
    assert preload.maybe_start(bpy.context, background=False)
    job = tasks.warming
    assert job is not None and preload.progress()  # the panel says what runs
    _wait_for_the_load()
    assert job.error is None and job.result["kind"] == "text"
    assert FIRST_TIME <= set(job.result["timings"])  # it paid the start, the import, the load
    client = tasks.current_client()
    assert client.status()["loaded"] == [f"text:{text_model.resolve()}"]
    assert not preload.maybe_start(bpy.context, background=False)  # once a session
    pid = client.pid
    assert bpy.ops.shape_e.text_to_mesh(prompt="a cup", **FAST) == {"FINISHED"}
    assert client.pid == pid and "Cup" in bpy.data.objects
    assert not FIRST_TIME & set(tasks.status.timings), tasks.status.timings
    assert {"sample", "decode"} <= set(tasks.status.timings)  # test_panel checks their text


@pytest.mark.main_blender
def test_generate_pressed_during_the_load_waits_behind_it_and_shows_it(cold, text_model):
    assert preload.maybe_start(bpy.context, background=False)
    assert bpy.ops.shape_e.text_to_mesh(prompt="a jug", blocking=False, **FAST) == {"FINISHED"}
    stages = []
    deadline = time.monotonic() + 300
    while tasks.busy():
        assert time.monotonic() < deadline, tasks.status
        tasks.tick(bpy.context, timeout=0.25)
        stages.append(tasks.status.stage)
    assert tasks.status.state == "done" and "Jug" in bpy.data.objects
    assert "loading" in stages and "queued" not in stages  # the load it waits for, by name
    assert not FIRST_TIME & set(tasks.status.timings)  # the load in advance paid them


def test_nothing_is_loaded_in_advance_in_background_mode_off_or_for_a_model_not_on_disk(
    cold, addon, monkeypatch, tmp_path
):
    assert not preload.maybe_start(bpy.context)  # module mode: background mode
    addon.preload = False
    try:
        assert not preload.maybe_start(bpy.context, background=False)
    finally:
        addon.preload = True
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    addon.text_model = "someone/not-downloaded"
    assert not preload.maybe_start(bpy.context, background=False)
    assert tasks.warming is None
    client = tasks.current_client()
    assert client is None or not client.is_running()  # not even the worker was started
    drain()
