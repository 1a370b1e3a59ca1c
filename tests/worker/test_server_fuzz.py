"""Fuzzing the worker's reader: whatever lines come in, each line out is one valid JSON-RPC 2.0
response or notification, each request is answered once, and the reader reads on."""

import io
import json
from pathlib import Path

import hypothesis
from hypothesis import given
from hypothesis import strategies as st

from shape_e_blender.core import protocol
from shape_e_blender.core.errors import (
    CANCELLED,
    CODE_NAMES,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
)
from shape_e_blender.core.params import SOURCES
from shape_e_blender.worker.output import Output
from shape_e_blender.worker.server import Server
from tests.core.test_protocol_fuzz import (
    ANY_TEXT,
    FUZZ,
    GENERATE_KEYS,
    HUGE_INTS,
    IDS,
    JSON_VALUES,
    ODD_TEXT,
    dump,
    envelopes,
    lines,
)

from .workerproc import WorkerProcess

QUEUED = ("generate", "download")  # handle_line queues these; nothing here runs them


def valid_id(rid) -> bool:
    return isinstance(rid, (int, str)) and not isinstance(rid, bool)


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def messages_of(data: bytes) -> list[dict]:
    """The worker's output as messages; each line must be one strict JSON object (no NaN)."""
    assert data == b"" or data.endswith(b"\n")
    out = []
    for line in data.splitlines():
        msg = json.loads(line.decode("utf-8"), parse_constant=reject_constant)
        check_message(msg)
        out.append(msg)
    return out


def check_message(msg) -> None:
    """A JSON-RPC 2.0 response (exactly one of result and error) or a progress notification."""
    assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0"
    if "method" in msg:
        assert set(msg) == {"jsonrpc", "method", "params"}
        assert msg["method"] == "progress" and isinstance(msg["params"], dict)
        return
    assert set(msg) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), msg
    assert msg["id"] is None or valid_id(msg["id"])
    if "error" in msg:
        err = msg["error"]
        assert set(err) == {"code", "message", "data"}
        assert type(err["code"]) is int and isinstance(err["message"], str)
        data = err["data"]
        assert isinstance(data, dict) and set(data) <= {"kind", "hint", "field"}
        assert data["kind"] == CODE_NAMES[err["code"]] and isinstance(data["hint"], str)
        if err["code"] == INVALID_PARAMS:
            assert isinstance(data.get("field"), str)
        assert err["code"] != INTERNAL_ERROR, err  # what a client sends is never the worker's bug


def request_of(line: bytes):
    """The line as JSON-RPC 2.0 reads it: "not json", None for JSON that is not a request, or the
    request object."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return "not json"
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        return None
    if not isinstance(obj.get("method"), str):
        return None
    if obj.get("id") is not None and not valid_id(obj["id"]):
        return None
    if obj.get("params") is not None and not isinstance(obj["params"], dict):
        return None
    return obj


def expected_ids(line: bytes) -> list:
    """The ids of the answers a line gets when nothing is queued: one, or none (a notification)."""
    obj = request_of(line)
    if obj == "not json":
        return [None]
    if obj is None:
        parsed = json.loads(line)
        rid = parsed.get("id") if isinstance(parsed, dict) else None
        return [rid if valid_id(rid) else None]
    if "id" not in obj or obj["method"] == "shutdown":
        return []
    return [obj["id"]]


def check_line(server: Server, stream: io.BytesIO, line: bytes) -> None:
    """Feed one line to ``server``; check what it wrote against what JSON-RPC 2.0 asks."""
    start = len(stream.getvalue())
    before = server.status()["queued"]
    server.handle_line(line)  # must not raise
    out = messages_of(stream.getvalue()[start:])
    after = server.status()["queued"]
    obj = request_of(line)
    answers = [m for m in out if "method" not in m]
    notes = [m for m in out if "method" in m]
    if not isinstance(obj, dict):
        code = PARSE_ERROR if obj == "not json" else INVALID_REQUEST
        assert [(m["id"], m["error"]["code"]) for m in answers] == [(expected_ids(line)[0], code)]
        assert notes == [] and after == before
        return
    # A cancel of a queued job answers itself first (when it has an id), then that job, with
    # error "cancelled".
    if obj["method"] == "cancel" and len(after) < len(before):
        target = obj["params"]["id"]
        before = before.copy()
        before.remove(target)  # the first job of that id
        assert (answers[-1]["id"], answers[-1]["error"]["code"]) == (target, CANCELLED)
        answers = answers[:-1]
    queued = obj["method"] in QUEUED and after == [*before, obj.get("id")]
    if queued:
        assert "id" in obj and obj["id"] is not None and answers == []
        # Jobs ahead are announced (nothing runs here, so the queue is what is ahead).
        expected = [{"id": obj["id"], "stage": "queued", "step": 0, "total": len(before)}]
        assert [m["params"] for m in notes] == (expected if before else [])
        return
    assert notes == [] and after == before
    if obj["method"] == "shutdown" and "id" in obj and answers:  # its params were refused
        assert [(m["id"], "error" in m) for m in answers] == [(obj["id"], True)]
        return
    assert [m["id"] for m in answers] == expected_ids(line)


def new_server(folder: Path) -> tuple[Server, io.BytesIO]:
    stream = io.BytesIO()
    return Server(Output(stream), jobs_root=folder / "jobs"), stream


def check_the_reader_is_alive(server: Server, stream: io.BytesIO) -> None:
    start = len(stream.getvalue())
    queued = server.status()["queued"]
    server.handle_line(dump(protocol.request("after-1", "hello")))
    server.handle_line(dump(protocol.request("after-2", "status")))
    hello, status = messages_of(stream.getvalue()[start:])
    assert hello["id"] == "after-1" and hello["result"]["protocol"] == protocol.PROTOCOL_VERSION
    assert hello["result"]["devices"][-1]["name"] == "cpu"
    assert status["id"] == "after-2"
    assert status["result"] == {"running": None, "queued": queued, "loaded": []}


def test_fuzzed_lines_get_valid_answers_and_the_reader_reads_on(tmp_path):
    server, stream = new_server(tmp_path)

    @hypothesis.settings(FUZZ, max_examples=300)
    @given(lines())
    def one_line(line):
        check_line(server, stream, line)

    one_line()
    check_the_reader_is_alive(server, stream)


def test_fuzzed_requests_of_every_method_get_valid_answers(tmp_path):
    server, stream = new_server(tmp_path)

    @hypothesis.settings(FUZZ, max_examples=150)
    @given(st.sampled_from(protocol.METHODS), st.data())
    def one_request(method, data):
        msg = data.draw(envelopes(methods=st.just(method)))
        check_line(server, stream, dump(msg, data.draw(st.booleans())))

    one_request()
    check_the_reader_is_alive(server, stream)


def test_one_bad_generate_parameter_is_refused_by_its_name_or_queued(tmp_path):
    server, stream = new_server(tmp_path)

    @hypothesis.settings(FUZZ, max_examples=200)
    @given(st.sampled_from(GENERATE_KEYS), JSON_VALUES | HUGE_INTS | ODD_TEXT, IDS)
    def one_request(name, value, rid):
        base = {} if name in SOURCES else {"prompt": "a red chair"}
        if name == "image_data":
            base = {"image": "chair.png"}
        params = base | {name: value}
        start = len(stream.getvalue())
        taken = rid in server.status()["queued"]  # a queued job's id is refused as "id"
        line = dump(protocol.request(rid, "generate", params))
        check_line(server, stream, line)
        answers = [m for m in messages_of(stream.getvalue()[start:]) if "method" not in m]
        if answers and rid is not None:
            field = answers[0]["error"]["data"]["field"]
            assert (
                field == name
                or (name in SOURCES and value in (None, "") and field == "prompt")
                or (taken and field == "id")
            )

    one_request()
    check_the_reader_is_alive(server, stream)


def test_cancel_of_queued_jobs_answers_each_once(tmp_path):
    """Queued jobs are cancelled by fuzzed cancels: each answers "cancelled" once, then is gone."""
    server, stream = new_server(tmp_path)
    ids = st.integers(0, 5) | st.sampled_from(["a", "b"])
    job = st.builds(
        lambda rid, method: protocol.request(
            rid, method, {"prompt": "a chair"} if method == "generate" else {"model": "m"}
        ),
        ids,
        st.sampled_from(QUEUED),
    )
    cancel = st.builds(
        lambda rid, target, note: (
            {"jsonrpc": "2.0", "method": "cancel", "params": {"id": target}}
            | ({} if note else {"id": rid})
        ),
        ids,
        ids | JSON_VALUES,
        st.booleans(),
    )

    @hypothesis.settings(FUZZ, max_examples=100)
    @given(st.lists(job | cancel, max_size=12))
    def some_lines(msgs):
        for msg in msgs:
            check_line(server, stream, dump(msg))

    some_lines()
    check_the_reader_is_alive(server, stream)


# -- a real worker -------------------------------------------------------------------------------


def harmless(msg):
    """A message the worker answers at once: generate and download only in forms it refuses
    before queueing, and no shutdown (the worker would stop reading)."""
    if not isinstance(msg, dict):
        return msg
    if msg.get("method") == "shutdown":
        msg["method"] = "status"
    if msg.get("method") in QUEUED and isinstance(msg.get("params"), dict):
        refused = {"not a parameter": 1} if msg["method"] == "generate" else {"model": 1}
        msg["params"] = msg["params"] | refused
    return msg


def worker_lines():
    return st.one_of(
        st.binary(max_size=60),
        st.builds(dump, JSON_VALUES, st.booleans()),
        st.builds(
            dump,
            envelopes(methods=st.sampled_from(protocol.METHODS) | ANY_TEXT).map(harmless),
            st.booleans(),
        ),
        st.builds(lambda m: dump(harmless(protocol.request(1, m, {}))), st.sampled_from(QUEUED)),
    )


def test_a_worker_process_answers_hundreds_of_fuzzed_lines_in_order_and_reads_on(tmp_path):
    worker = WorkerProcess(tmp_path)
    try:
        sent: list[bytes] = []

        @hypothesis.settings(FUZZ, max_examples=80)
        @given(st.lists(worker_lines(), min_size=1, max_size=8))
        def send(batch):
            for line in batch:
                worker.send_raw(line)
                sent.append(line)

        send()
        assert len(sent) >= 200
        worker.send("hello", id="hello-after-fuzzing")
        hello, before = worker.response("hello-after-fuzzing")
        assert hello["result"]["protocol"] == protocol.PROTOCOL_VERSION
        worker.send("status", id="status-after-fuzzing")
        status, _ = worker.response("status-after-fuzzing")
        assert status["result"] == {"running": None, "queued": [], "loaded": []}
        assert worker.close() == 0
        assert "Traceback" not in "".join(worker.stderr)
        for msg in [*before, hello, status]:
            check_message(msg)
        assert worker.not_json == []
        # The reader splits at newlines and skips blank lines, as read_loop does.
        pieces = [p.strip() for line in sent for p in line.split(b"\n")]
        expected = [rid for p in pieces if p for rid in expected_ids(p)]
        assert [m["id"] for m in before] == expected
    finally:
        worker.kill()


# -- regressions -------------------------------------------------------------------------------


def test_a_download_with_a_cache_dir_that_is_no_path_is_refused_before_queueing(tmp_path):
    """cache_dir: 5 was queued and failed in the job as a bug of the worker (TypeError)."""
    server, stream = new_server(tmp_path)
    for value in (5, ["x"], "", "a\0b"):
        server.handle_line(
            dump(protocol.request(1, "download", {"model": "m", "cache_dir": value}))
        )
    out = messages_of(stream.getvalue())
    assert [(m["error"]["code"], m["error"]["data"]["field"]) for m in out] == [
        (INVALID_PARAMS, "cache_dir")
    ] * 4
    assert server.status()["queued"] == []
    for rid, value in ((2, "c"), (3, None)):
        server.handle_line(
            dump(protocol.request(rid, "download", {"model": "m", "cache_dir": value}))
        )
    assert server.status()["queued"] == [2, 3]
