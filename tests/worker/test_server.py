"""The worker's protocol loop, run as a real subprocess (no model needed for these)."""

import json
from pathlib import Path

import pytest

from shape_e_blender.core.errors import (
    ENVIRONMENT_INCOMPLETE,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MODEL_UNAVAILABLE,
    PARSE_ERROR,
)
from shape_e_blender.core.protocol import MAX_REQUEST_BYTES
from tests.support import NO_TORCH_PYTHON, NO_TORCH_REASON

from .workerproc import WorkerProcess, child_env, run_python


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


def test_a_line_too_deep_or_a_number_too_long_is_answered_and_the_worker_reads_on(worker):
    """Each used to kill the reader thread (RecursionError; ValueError past 4300 digits)."""
    deep = '{"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {"a": ' + "[" * 100_000
    worker.send_raw(deep + "]" * 100_000 + "}}")
    msg = worker.next()
    assert msg["id"] is None and msg["error"]["code"] == PARSE_ERROR
    assert "nesting" in msg["error"]["data"]["hint"]
    worker.send_raw(
        '{"jsonrpc": "2.0", "id": 2, "method": "hello", "params": {"n": ' + "7" * 5000 + "}}"
    )
    msg = worker.next()
    assert msg["error"]["code"] == PARSE_ERROR and "4300 digits" in msg["error"]["data"]["hint"]
    msg, _ = worker.call("status")
    assert "result" in msg  # still reading
    assert worker.close() == 0


def test_an_unknown_generate_parameter_is_refused_with_the_known_ones(worker):
    msg, _ = worker.call("generate", {"prompt": "a chair", "sead": 3})
    err = msg["error"]
    assert err["code"] == INVALID_PARAMS and err["data"]["field"] == "sead"
    assert "seed" in err["data"]["hint"] and "job_dir" in err["data"]["hint"]


def test_a_request_with_id_null_is_answered_with_id_null(worker):
    worker.send("generate", {"prompt": "a chair"}, id=None)  # no id member: a notification
    worker.send_raw(
        '{"jsonrpc": "2.0", "id": null, "method": "generate", "params": {"prompt": "a"}}'
    )
    msg = worker.next()
    assert msg["id"] is None and msg["error"]["code"] == INVALID_REQUEST
    assert "needs an id" in msg["error"]["message"]
    worker.send_raw('{"jsonrpc": "2.0", "id": null, "method": "status"}')
    msg = worker.next()
    assert msg["id"] is None and "result" in msg


def test_notifications_get_no_answer(worker):
    worker.send("status", id=None)
    msg, notes = worker.call("status")
    assert "result" in msg
    assert notes == []  # nothing came back for the notification


STRAY_WRITES = """
import os, sys
from shape_e_blender.worker.server import main
_original = main
def main_with_stray_output():
    import threading
    def stray():
        print("stray print")
        sys.stdout.flush()
        os.write(1, b"stray write to fd 1\\n")
    threading.Timer(0.2, stray).start()
    return _original(sys.argv[1:])
sys.exit(main_with_stray_output())
"""


def test_stdout_carries_only_protocol_lines(tmp_path):
    """Libraries that print (or write to fd 1 from C) must not corrupt the protocol."""
    w = WorkerProcess(tmp_path, code=STRAY_WRITES)
    try:
        import time

        deadline = time.monotonic() + 60  # wait for the stray writes to have happened
        while "stray write to fd 1" not in "".join(w.stderr) and time.monotonic() < deadline:
            time.sleep(0.05)
        msg, notes = w.call("status")
        assert "result" in msg and notes == []
        assert w.close() == 0
        assert w.not_json == []
        stderr = "".join(w.stderr)
        assert "stray print" in stderr and "stray write to fd 1" in stderr
    finally:
        w.kill()


@pytest.mark.skipif(not NO_TORCH_PYTHON, reason=NO_TORCH_REASON)
def test_a_worker_python_without_torch_says_how_to_fix_it(tmp_path):
    w = WorkerProcess(tmp_path, python=NO_TORCH_PYTHON)
    try:
        msg, _ = w.call("hello")
        err = msg["error"]
        assert err["code"] == ENVIRONMENT_INCOMPLETE and err["data"]["field"] == "worker_python"
        assert "torch" in err["message"] and "worker environment" in err["data"]["hint"]
        msg, _ = w.call("generate", {"prompt": "a chair", "steps": 2, "grid_size": 32})
        assert msg["error"]["code"] == ENVIRONMENT_INCOMPLETE
        assert w.close() == 0
    finally:
        w.kill()


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


def test_the_server_cli_and_hub_import_without_torch(tmp_path):
    """hello's first answer, the CLI's --help and a download never wait for torch to import."""
    modules = ("server", "cli", "hub.download")
    heavy = "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    code = "; ".join(
        ["import sys", *(f"import shape_e_blender.worker.{m}" for m in modules), heavy]
    )
    proc = run_python("-c", code, env=child_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cancels_answer_goes_out_before_the_cancelled_jobs_even_when_the_reader_is_slow(
    tmp_path, monkeypatch
):
    """In-process server; the reader thread is slowed where it builds cancel's answer, which is
    where the job's own answer used to overtake it (a client waiting for the ack saw the job end
    first)."""
    import io
    import threading
    import time

    from shape_e_blender.core import protocol
    from shape_e_blender.worker import server as server_mod

    stream = io.BytesIO()
    srv = server_mod.Server(server_mod.Output(stream), jobs_root=tmp_path)
    started = threading.Event()

    def job_until_cancelled(job):
        started.set()
        assert job.cancel.wait(10)
        return {"finished": True}

    srv._methods["download"] = job_until_cancelled
    response = protocol.response

    def slow_response(rid, result):
        if result == {"cancelled": True}:
            time.sleep(0.5)
        return response(rid, result)

    monkeypatch.setattr(server_mod.protocol, "response", slow_response)
    runner = threading.Thread(target=srv.run_jobs)
    runner.start()
    srv.handle_line(b'{"jsonrpc": "2.0", "id": 1, "method": "download", "params": {"model": "m"}}')
    assert started.wait(10)
    srv.handle_line(b'{"jsonrpc": "2.0", "id": 2, "method": "cancel", "params": {"id": 1}}')
    srv.close()
    runner.join(10)
    answers = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [a["id"] for a in answers] == [2, 1]
    assert answers[0]["result"] == {"cancelled": True}
    assert answers[1]["error"]["data"]["kind"] == "cancelled"


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("load", {"model": "openai/shap-e", "sead": 1}, "sead"),
        ("download", {"model": "openai/shap-e", "revision": "main"}, "revision"),
        ("load", {"model": "openai/shap-e", "device": "tpu"}, "device"),
        ("load", {"model": "openai/shap-e", "precision": True}, "precision"),
        ("load", {"model": "openai/shap-e", "kind": "video"}, "kind"),
        ("load", {"model": 3}, "model"),
        ("load", {"model": "openai/shap-e", "cache_dir": 3}, "cache_dir"),
    ],
)
def test_load_and_download_refuse_unknown_and_bad_params_naming_the_field(
    worker, method, params, field
):
    msg, notes = worker.call(method, params)
    err = msg["error"]
    assert err["code"] == INVALID_PARAMS and err["data"]["field"] == field
    assert err["data"]["hint"] and notes == []
    if field in ("sead", "revision"):  # an unknown name: the hint lists the known ones
        assert "model, kind, cache_dir" in err["data"]["hint"]


def test_a_second_job_with_the_id_of_a_queued_or_running_one_is_refused(worker, tmp_path):
    """Both were taken: two answers with one id, progress that could not be told apart, and a
    cancel that could stop only one of them."""
    params = {"prompt": "a cup", "model": str(tmp_path / "none"), "steps": 2, "grid_size": 32}
    first = json.dumps({"jsonrpc": "2.0", "id": "dup", "method": "generate", "params": params})
    worker.send_raw(first + "\n" + first)  # the reader takes the second once the first is queued
    answers = []
    while len(answers) < 2:
        msg = worker.next()
        if "method" not in msg:
            answers.append(msg)
    refused = next(a for a in answers if a["error"]["data"].get("field") == "id")
    assert refused["id"] == "dup" and refused["error"]["code"] == INVALID_PARAMS
    assert "queued or running" in refused["error"]["message"]
    ran = next(a for a in answers if a is not refused)
    assert ran["error"]["code"] == MODEL_UNAVAILABLE  # the first one ran: its model is missing


def _peak_memory(pid: int) -> int:
    """The process's peak resident set in bytes (Linux's VmHWM)."""
    with Path(f"/proc/{pid}/status").open() as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_a_line_far_over_the_limit_is_answered_without_being_held_whole(worker):
    """The whole line was read before its length was checked: a client could fill the worker's
    memory with one line."""
    worker.call("status")
    before = _peak_memory(worker.proc.pid)
    size = 8 * MAX_REQUEST_BYTES
    head = b'{"jsonrpc":"2.0","id":"big","method":"generate","params":{"prompt":"'
    assert worker.proc.stdin is not None
    worker.proc.stdin.write(head + b"a" * (size - len(head) - 3) + b'"}}\n')
    worker.proc.stdin.flush()
    msg = worker.next()
    assert msg["id"] == "big" and msg["error"]["code"] == INVALID_REQUEST
    assert f"request line is {size} bytes" in msg["error"]["message"]
    assert _peak_memory(worker.proc.pid) - before < 3 * MAX_REQUEST_BYTES < size
    msg, _ = worker.call("status")  # the next line is read as a line of its own
    assert "result" in msg


@pytest.mark.parametrize(
    ("method", "params", "hint"),
    [
        ("hello", {"client": "x"}, "hello takes none"),
        ("status", {"verbose": True}, "status takes none"),
        ("cancel", {"id": 1, "force": True}, "the parameters are id"),
        ("shutdown", {"detach": True, "now": 1}, "the parameters are detach"),
    ],
)
def test_every_method_refuses_a_parameter_it_does_not_know(worker, method, params, hint):
    """They were ignored: a misspelt ``detach`` shut the worker down without detaching."""
    msg, _ = worker.call(method, params)
    err = msg["error"]
    assert err["code"] == INVALID_PARAMS and err["data"]["hint"] == hint
    assert err["data"]["field"] == next(k for k in params if k not in ("id", "detach"))
    msg, _ = worker.call("status")  # still there: a refused shutdown did not happen
    assert "result" in msg
