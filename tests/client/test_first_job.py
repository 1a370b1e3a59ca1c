"""What a first job waits for, through WorkerClient and a real worker: the worker's start (spawn
to hello) joins the timings of the job that waited for it, and of no other."""

from __future__ import annotations

import time

import pytest

from shape_e_blender.client.client import WorkerClient
from shape_e_blender.core.params import GenerationParams
from shape_e_blender.core.protocol import GenerateRequest
from tests.support import FAST, WORKER_PYTHON


@pytest.fixture
def client(tmp_path):
    c = WorkerClient(WORKER_PYTHON, tmp_path / "jobs")
    yield c
    c.kill()


def _generate(client: WorkerClient, model, seed: int) -> dict:
    params = GenerationParams.create(prompt="a cup", model=str(model), seed=seed, **FAST)
    job = client.wait(client.generate(GenerateRequest(params)), 300)
    return job.raise_for_error()["timings"]


def test_the_start_is_timed_on_the_job_that_waited_for_it_and_on_no_later_one(
    client, worker_text_model
):
    before = time.monotonic()
    first = _generate(client, worker_text_model, 0)  # sent before the worker was up
    waited = time.monotonic() - before
    assert 0 < first["start"] < waited and first["import"] > 0 and first["load"] > 0
    assert list(first)[:2] == ["start", "import"]  # in the order they happened
    second = _generate(client, worker_text_model, 1)
    assert not {"start", "import", "load"} & set(second)


def test_a_job_sent_to_a_worker_already_up_is_not_billed_its_start(client, worker_text_model):
    client.hello()  # the worker is up before any job
    loaded = client.wait(client.load(str(worker_text_model), "text"), 300).raise_for_error()
    assert "start" not in loaded["timings"] and loaded["timings"]["load"] > 0
    assert not {"start", "import", "load"} & set(_generate(client, worker_text_model, 0))
