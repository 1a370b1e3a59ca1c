"""A first job against a warm one: the worker's import and model load are timed as their own
stages, and ``load`` pays them ahead of the first generate (real worker subprocesses, each fresh:
nothing may be warm when a test starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shape_e_blender.core.errors import MODEL_UNAVAILABLE

from .workerproc import WorkerProcess

FAST = {"steps": 3, "grid_size": 32}
FIRST_TIME_STAGES = {"starting", "loading"}  # the engine's import, the model's load
FIRST_TIME_TIMINGS = {"import", "load"}


@pytest.fixture
def fresh(tmp_path):
    w = WorkerProcess(tmp_path)
    yield w
    w.kill()


def _stages(notes: list[dict]) -> set[str]:
    return {n["params"]["stage"] for n in notes}


def test_a_fresh_workers_first_generate_times_its_import_and_load_and_the_second_pays_neither(
    fresh, tiny_text_model
):
    job = {"prompt": "a cup", "model": str(tiny_text_model), **FAST}
    first, notes = fresh.call("generate", job)
    assert FIRST_TIME_STAGES <= _stages(notes)
    timings = first["result"]["timings"]
    assert all(timings[name] > 0 for name in FIRST_TIME_TIMINGS), timings
    second, notes = fresh.call("generate", job | {"seed": 1})
    assert not FIRST_TIME_STAGES & _stages(notes)
    assert not FIRST_TIME_TIMINGS & set(second["result"]["timings"])
    assert {"sample", "decode", "write"} <= set(second["result"]["timings"])


def test_load_pays_the_import_and_the_load_so_the_first_generate_pays_neither(
    fresh, tiny_text_model
):
    msg, notes = fresh.call("load", {"model": str(tiny_text_model), "kind": "text"})
    assert FIRST_TIME_STAGES <= _stages(notes)
    loaded = msg["result"]
    assert (loaded["kind"], loaded["device"], loaded["precision"]) == ("text", "cpu", "fp32")
    assert all(loaded["timings"][name] > 0 for name in FIRST_TIME_TIMINGS), loaded
    status, _ = fresh.call("status")
    assert status["result"]["loaded"] == [f"text:{Path(tiny_text_model).resolve()}"]
    job = {"prompt": "a cup", "model": str(tiny_text_model), **FAST}
    msg, notes = fresh.call("generate", job)
    assert not FIRST_TIME_STAGES & _stages(notes)
    assert not FIRST_TIME_TIMINGS & set(msg["result"]["timings"])
    assert msg["result"]["meshes"][0]["faces"] > 0


def test_load_of_a_model_not_on_disk_is_answered_before_torch_is_imported(tmp_path):
    """Never a download, and not even the engine's import for a model that is not there."""
    w = WorkerProcess(tmp_path, env_extra={"HF_HUB_CACHE": str(tmp_path / "empty-cache")})
    try:
        msg, notes = w.call("load", {"model": "openai/shap-e"})
        err = msg["error"]
        assert err["code"] == MODEL_UNAVAILABLE and err["data"]["field"] == "model"
        assert "openai/shap-e" in err["message"] and err["data"]["hint"]
        assert notes == []  # no "starting": the engine was never imported
        assert "libtorch" not in Path(f"/proc/{w.proc.pid}/maps").read_text()
        assert not (tmp_path / "empty-cache").exists()  # nothing was fetched into the cache
    finally:
        w.kill()
