"""The worker's protocol loop, run as a real subprocess (no model needed for these)."""

import json

import pytest

from shape_e_blender.core.errors import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MODEL_UNAVAILABLE,
    PARSE_ERROR,
)

from .workerproc import WorkerProcess


@pytest.fixture
def worker(tmp_path):
    w = WorkerProcess(tmp_path)
    yield w
    w.kill()


def test_malformed_lines_get_errors_and_the_worker_reads_on(worker):
    worker.send_raw("{this is not json")
    msg = worker.next()
    assert msg["id"] is None and msg["error"]["code"] == PARSE_ERROR
    worker.send_raw('{"jsonrpc": "2.0", "id": 5}')
    msg = worker.next()
    assert msg["id"] == 5 and msg["error"]["code"] == INVALID_REQUEST
    worker.send_raw(b"\xff\xfe garbage")
    assert worker.next()["error"]["code"] == PARSE_ERROR
    msg, _ = worker.call("fly")
    assert msg["error"]["code"] == METHOD_NOT_FOUND
    assert "generate" in msg["error"]["data"]["hint"]
    msg, _ = worker.call("status")
    assert msg["result"] == {"running": None, "queued": [], "loaded": []}
    assert worker.close() == 0


def test_bad_generate_params_are_refused_before_queueing(worker):
    msg, notes = worker.call("generate", {"prompt": "a chair", "grid_size": 7})
    err = msg["error"]
    assert err["code"] == INVALID_PARAMS and err["data"]["field"] == "grid_size"
    assert "32..512" in err["message"] and err["data"]["hint"]
    assert notes == []
    msg, _ = worker.call("generate", {"seed": 1})
    assert msg["error"]["data"]["field"] == "prompt"
    msg, _ = worker.call("cancel", {})
    assert msg["error"]["data"]["field"] == "id"
    msg, _ = worker.call("cancel", {"id": 99})
    assert msg["result"] == {"cancelled": False}


def test_notifications_get_no_answer(worker):
    worker.send("status", id=None)
    msg, _ = worker.call("status")
    assert "result" in msg  # the first message back answers the second request


def test_stdout_carries_only_protocol_lines(worker):
    worker.call("status")
    assert worker.close() == 0
    # every line the reader thread parsed was JSON-RPC
    while not worker.messages.empty():
        msg = worker.messages.get()
        if msg is not None:
            assert msg["jsonrpc"] == "2.0"


def test_shutdown_answers_and_exits(worker):
    rid = worker.send("shutdown")
    msg, _ = worker.response(rid)
    assert msg["result"] == {}
    assert worker.proc.wait(30) == 0
    assert json.dumps(msg)


def test_download_of_a_local_folder_answers_at_once(worker, tiny_text_model):
    msg, _ = worker.call("download", {"model": str(tiny_text_model)})
    result = msg["result"]
    assert result["path"] == str(tiny_text_model) and result["kind"] == "text"
    assert result["bytes"] > 10_000


def test_download_without_a_hub_names_the_repo(worker):
    msg, _ = worker.call("download", {"model": "openai/shap-e-img2img"})
    err = msg["error"]
    assert err["code"] == MODEL_UNAVAILABLE
    assert "openai/shap-e-img2img" in err["message"] and err["data"]["hint"]
    msg, _ = worker.call("download", {"model": "openai/shap-e", "kind": "video"})
    assert msg["error"]["data"]["field"] == "kind"
