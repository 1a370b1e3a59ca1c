"""Downloads from the stand-in hub: exactly the files needed, byte progress, resuming, errors.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so every call that may
touch the network runs in a subprocess with its own environment (standin.run_worker_side).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from shape_e_blender.core.errors import CANCELLED, MODEL_UNAVAILABLE, ShapEError
from shape_e_blender.worker.hub import download as dl

from ..workerproc import WorkerProcess
from .standin import (
    BIG,
    COMMIT,
    FAKE_FILES,
    MIB,
    NEW_COMMIT,
    REPO_ID,
    TEXT_FILES,
    assert_progress,
    driver_args,
    files_under,
    hub_env,
    run_python_ok,
    run_worker_side,
    sha256,
)


def _remote(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "remote" / name).read_bytes()


def _total(tmp_path: Path) -> int:
    return sum((tmp_path / "remote" / name).stat().st_size for name in TEXT_FILES)


def _bytes_before(tmp_path: Path, name: str) -> int:
    """Bytes of the files that a text download fetches before ``name``."""
    order = dl.select_files(FAKE_FILES, "text", source=REPO_ID)
    return sum((tmp_path / "remote" / n).stat().st_size for n in order[: order.index(name)])


def _blobs(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "models--openai--shap-e" / "blobs"


def _partial(tmp_path: Path, data: bytes) -> Path:
    """Where the bytes so far of the LFS file holding ``data`` are kept."""
    return _blobs(tmp_path) / f"{sha256(data)}.incomplete"


# ---- downloads from the stand-in ---------------------------------------------------------------


def test_download_fetches_exactly_the_needed_files_with_byte_progress(tmp_path, hub):
    out = run_worker_side(tmp_path, hub.url)
    assert "ok" in out, out
    folder = Path(out["ok"]["path"])
    assert folder == tmp_path / "cache" / "models--openai--shap-e" / "snapshots" / COMMIT
    assert files_under(folder) == TEXT_FILES
    for name in TEXT_FILES:
        assert (folder / name).read_bytes() == (tmp_path / "remote" / name).read_bytes()
    total = sum((tmp_path / "remote" / name).stat().st_size for name in TEXT_FILES)
    assert_progress(out["progress"], total)
    assert len(out["progress"]) > len(TEXT_FILES)  # bytes within files, not only file counts
    fetched = {p.split(f"/resolve/{COMMIT}/", 1)[-1] for p in hub.gets("/openai/shap-e/resolve/")}
    assert fetched == TEXT_FILES  # no renderer/, no pickled twins, no README
    assert not any(p.startswith("/openai/shap-e/resolve/main/") for p in hub.gets())


def test_plan_reports_sizes_and_what_is_cached(tmp_path, hub):
    plan = run_worker_side(tmp_path, hub.url, call="plan")["ok"]
    sizes = {name: (tmp_path / "remote" / name).stat().st_size for name in TEXT_FILES}
    assert dict(map(tuple, plan["files"])) == sizes
    assert plan["total"] == sum(sizes.values()) and plan["cached"] == 0
    assert plan["revision"] == COMMIT
    assert hub.gets() == ["/api/models/openai/shap-e"]  # one request, no file transfer

    run_worker_side(tmp_path, hub.url)
    again = run_worker_side(tmp_path, hub.url, call="plan")["ok"]
    assert again["cached"] == again["total"]


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path, hub):
    hub.drop_once.add(BIG)
    out = run_worker_side(tmp_path, hub.url)
    assert "ok" in out, out
    folder = Path(out["ok"]["path"])
    assert (folder / BIG).read_bytes() == (tmp_path / "remote" / BIG).read_bytes()
    size = (tmp_path / "remote" / BIG).stat().st_size
    ranges = [r for m, p, r in hub.log if m == "GET" and p.endswith(BIG) and r]
    assert len(ranges) == 1
    start = int(ranges[0].removeprefix("bytes=").rstrip("-"))
    # Whole chunks are written: it resumes after the last complete one that arrived.
    assert start == hub.drop_at // MIB * MIB and start < hub.drop_at < size
    assert hub.sent[BIG] == hub.drop_at + size - start
    assert_progress(out["progress"], _total(tmp_path))


def test_a_failed_download_keeps_finished_files_for_the_next_call(tmp_path, hub):
    renderer = "shap_e_renderer/diffusion_pytorch_model.bin"
    hub.fail.add(renderer)
    first = run_worker_side(tmp_path, hub.url)
    err = first["error"]
    assert err["code"] == MODEL_UNAVAILABLE and renderer in err["message"]
    assert "500" in err["message"] and "finished files are kept" in err["data"]["hint"]

    hub.fail.clear()
    hub.log.clear()
    second = run_worker_side(tmp_path, hub.url)
    assert "ok" in second, second
    assert files_under(Path(second["ok"]["path"])) == TEXT_FILES
    assert [p.rsplit("/", 2)[-2:] for p in hub.gets("/openai/")] == [renderer.split("/")]


def test_a_killed_download_resumes_in_a_new_process_from_its_partial_file(tmp_path, hub):
    data, cut, before = _remote(tmp_path, BIG), 5 * MIB, _bytes_before(tmp_path, BIG)
    release = threading.Event()
    hub.stall[BIG] = (cut, release)  # the hub sends 5 MiB, then nothing until the kill
    proc = subprocess.Popen(
        [sys.executable, *driver_args(tmp_path, call="download", stream=True)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=hub_env(tmp_path, hub.url),
        cwd=tmp_path,
    )
    try:
        for line in proc.stdout:  # progress is reported once the bytes are in the file
            if json.loads(line)[0] >= before + cut:
                break
        else:
            pytest.fail("the download ended before reaching the stall")
    finally:
        proc.kill()  # as if Blender or the worker were killed
        proc.wait(timeout=60)
        proc.stdout.close()
        release.set()
    part = _partial(tmp_path, data)
    assert part.read_bytes() == data[:cut]

    hub.log.clear()
    hub.sent.clear()
    out = run_worker_side(tmp_path, hub.url, call="download")
    assert "ok" in out, out
    assert hub.ranges(BIG) == [f"bytes={cut}-"]
    assert hub.sent[BIG] == len(data) - cut  # only the missing bytes crossed the network
    fetched = (Path(out["ok"]["path"]) / BIG).read_bytes()
    assert hashlib.sha256(fetched).hexdigest() == sha256(data)
    assert not part.exists()
    # The two files before it were finished, and 5 MiB of it were on disk: the bar starts there.
    assert_progress(out["progress"], _total(tmp_path), start=before + cut)


def test_a_cancelled_download_keeps_its_partial_file_and_the_plan_counts_it(tmp_path, hub):
    data, cut, before = _remote(tmp_path, BIG), 3 * MIB, _bytes_before(tmp_path, BIG)
    first = run_worker_side(tmp_path, hub.url, call="download", cancel_at=before + cut)
    assert first["error"]["code"] == CANCELLED
    part = _partial(tmp_path, data)
    assert part.read_bytes() == data[:cut]
    assert not (_blobs(tmp_path) / sha256(data)).exists()

    plan = run_worker_side(tmp_path, hub.url, call="plan")["ok"]
    assert plan["cached"] == before and plan["partial"] == cut
    assert plan["needed"] == _total(tmp_path) - before - cut  # what the disk check asks for
    hub.log.clear()
    hub.sent.clear()
    out = run_worker_side(tmp_path, hub.url, call="download")
    assert hub.ranges(BIG) == [f"bytes={cut}-"] and hub.sent[BIG] == len(data) - cut
    assert (Path(out["ok"]["path"]) / BIG).read_bytes() == data
    assert_progress(out["progress"], _total(tmp_path), start=before + cut)


def test_the_cli_says_what_is_kept_then_fetches_only_the_rest(tmp_path, hub):
    data, cut, before = _remote(tmp_path, BIG), 3 * MIB, _bytes_before(tmp_path, BIG)
    run_worker_side(tmp_path, hub.url, call="download", cancel_at=before + cut)
    hub.log.clear()
    hub.sent.clear()
    cmd = ["-m", "shape_e_blender", "download", "--cache-dir", str(tmp_path / "cache")]
    proc = run_python_ok(cmd, hub_env(tmp_path, hub.url), tmp_path)
    first = proc.stdout.strip().splitlines()[0]
    assert f"{(_total(tmp_path) - before - cut) / 1e6:.1f} MB to fetch" in first
    assert f"{cut / 1e6:.1f} MB kept from an interrupted download" in first
    assert hub.ranges(BIG) == [f"bytes={cut}-"] and hub.sent[BIG] == len(data) - cut
    ready = Path(proc.stdout.strip().splitlines()[-1].removeprefix("ready: "))
    assert (ready / BIG).read_bytes() == data


def test_a_partial_file_of_a_version_since_replaced_is_not_continued(tmp_path, hub):
    old, cut, before = _remote(tmp_path, BIG), 3 * MIB, _bytes_before(tmp_path, BIG)
    run_worker_side(tmp_path, hub.url, call="download", cancel_at=before + cut)
    new = np.random.default_rng(8).bytes(len(old))  # a new commit changes the weights
    (tmp_path / "remote" / BIG).write_bytes(new)
    hub.commit = NEW_COMMIT

    hub.log.clear()
    hub.sent.clear()
    out = run_worker_side(tmp_path, hub.url, call="download")
    assert "ok" in out, out
    assert Path(out["ok"]["path"]).name == NEW_COMMIT
    assert hub.ranges(BIG) == [None] and hub.sent[BIG] == len(new)
    assert (Path(out["ok"]["path"]) / BIG).read_bytes() == new
    assert _partial(tmp_path, old).read_bytes() == old[:cut]  # not appended to, not used


@pytest.mark.parametrize(
    ("server", "ranges"),
    [("ignores", [f"bytes={3 * MIB}-"]), ("refuses", [f"bytes={3 * MIB}-", None])],
)
def test_a_server_without_ranges_still_gives_the_right_file(tmp_path, hub, server, ranges):
    data, cut, before = _remote(tmp_path, BIG), 3 * MIB, _bytes_before(tmp_path, BIG)
    run_worker_side(tmp_path, hub.url, call="download", cancel_at=before + cut)
    # "ignores" answers 200 with the whole file, "refuses" answers 416
    (hub.ignore_range if server == "ignores" else hub.refuse_range).add(BIG)
    hub.log.clear()
    hub.sent.clear()
    out = run_worker_side(tmp_path, hub.url, call="download")
    assert "ok" in out, out
    assert hub.ranges(BIG) == ranges and hub.sent[BIG] == len(data)
    assert (Path(out["ok"]["path"]) / BIG).read_bytes() == data
    assert not _partial(tmp_path, data).exists()
    assert_progress(out["progress"], _total(tmp_path), start=before + cut)


@pytest.mark.parametrize("kept", ["damaged", "too long"])
def test_a_bad_partial_file_is_dropped_and_the_file_fetched_whole(tmp_path, hub, kept):
    data = _remote(tmp_path, BIG)
    part = _partial(tmp_path, data)
    part.parent.mkdir(parents=True)
    # "damaged": zeros where data should be, as a crash of the machine can leave a file
    part.write_bytes(bytes(3 * MIB) if kept == "damaged" else data + b"more")
    out = run_worker_side(tmp_path, hub.url, call="download")
    assert "ok" in out, out
    assert (Path(out["ok"]["path"]) / BIG).read_bytes() == data
    assert not part.exists()
    if kept == "damaged":  # resumed, failed the sha256 check, fetched again from the start
        assert hub.ranges(BIG) == [f"bytes={3 * MIB}-", None]
        assert hub.sent[BIG] == len(data) - 3 * MIB + len(data)
        assert_progress(out["progress"], _total(tmp_path), start=3 * MIB)
    else:  # longer than the file: not resumable
        assert hub.ranges(BIG) == [None] and hub.sent[BIG] == len(data)
        assert_progress(out["progress"], _total(tmp_path))


def test_damaged_bytes_from_the_hub_are_a_clear_error_and_not_kept(tmp_path, hub):
    data = _remote(tmp_path, BIG)
    hub.damage.add(BIG)
    out = run_worker_side(tmp_path, hub.url, call="download")
    err = out["error"]
    assert err["code"] == MODEL_UNAVAILABLE and err["data"]["field"] == "model"
    assert f"download {BIG} of {REPO_ID}" in err["message"] and "sha256" in err["message"]
    assert "again" in err["data"]["hint"] and "proxy" in err["data"]["hint"]
    assert hub.ranges(BIG) == [None]  # fresh bytes that fail the check are not fetched twice
    assert not list(_blobs(tmp_path).glob(f"{sha256(data)}*"))  # neither blob nor partial


def test_without_symlinks_each_file_is_moved_into_the_snapshot_not_copied(tmp_path, hub):
    out = run_worker_side(
        tmp_path, hub.url, call="download", env_extra={"HF_HUB_DISABLE_SYMLINKS": "1"}
    )
    folder = Path(out["ok"]["path"])
    for name in TEXT_FILES:
        assert not (folder / name).is_symlink()
        assert (folder / name).read_bytes() == _remote(tmp_path, name)
    assert not [p.name for p in _blobs(tmp_path).iterdir()]  # one copy of each file on disk


def test_a_second_process_waits_for_the_one_writing_the_file_then_continues_it(tmp_path, hub):
    data, held = _remote(tmp_path, BIG), 4 * MIB
    lock_path = tmp_path / "cache" / ".locks" / "models--openai--shap-e" / f"{sha256(data)}.lock"
    lock_path.parent.mkdir(parents=True)
    part = _partial(tmp_path, data)
    part.parent.mkdir(parents=True)
    with FileLock(lock_path):  # another process is downloading that file
        proc = subprocess.Popen(
            [sys.executable, *driver_args(tmp_path, call="download")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=hub_env(tmp_path, hub.url),
            cwd=tmp_path,
        )
        watchdog = threading.Timer(90, proc.kill)  # a process that waits without saying so
        watchdog.start()
        for line in proc.stderr:
            if "another process is downloading it; waiting" in line:
                break
        else:
            pytest.fail(f"it did not say that it waits: {proc.communicate()}")
        watchdog.cancel()
        assert not part.exists()  # the waiting process does not touch the file
        part.write_bytes(data[:held])  # what the other process got before it stopped
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert "ok" in out, out
    assert hub.ranges(BIG) == [f"bytes={held}-"]
    assert (Path(out["ok"]["path"]) / BIG).read_bytes() == data


def test_a_complete_cache_is_found_offline_without_any_request(tmp_path, hub):
    first = run_worker_side(tmp_path, hub.url)
    hub.log.clear()
    for allow in (False, True):
        out = run_worker_side(tmp_path, hub.url, offline=True, allow_download=allow)
        assert out["ok"]["path"] == first["ok"]["path"]
    out = run_worker_side(tmp_path, hub.url, offline=False, allow_download=False)
    assert out["ok"]["path"] == first["ok"]["path"]
    # An explicit download of a complete repo answers at once, online or not.
    for offline in (False, True):
        out = run_worker_side(tmp_path, hub.url, call="download", offline=offline)
        assert out["ok"]["path"] == first["ok"]["path"]
        total = out["progress"][-1][1]
        assert out["progress"] == [[total, total]] and total > 12_000_000
    plan = run_worker_side(tmp_path, hub.url, call="plan", offline=True)["ok"]
    assert plan["cached"] == plan["total"] == total and plan["revision"] == COMMIT
    assert {name for name, _ in plan["files"]} == TEXT_FILES
    assert hub.log == []


def test_a_partial_cache_is_not_taken_for_a_complete_one(tmp_path, hub):
    folder = Path(run_worker_side(tmp_path, hub.url)["ok"]["path"])
    link = folder / "text_encoder" / "model.fp16.safetensors"
    link.resolve().unlink()  # the blob, as if it had never arrived
    link.unlink()
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(REPO_ID, kind="text", cache_dir=tmp_path / "cache")
    assert "only partly" in err.value.message and "text_encoder/" in err.value.message
    hub.log.clear()
    out = run_worker_side(tmp_path, hub.url)  # allowed to download: fetches the one file
    assert "ok" in out, out
    fetched = f"/openai/shap-e/resolve/{COMMIT}/text_encoder/model.fp16.safetensors"
    assert hub.gets("/openai/") == [fetched]


def test_offline_mode_with_download_allowed_says_so(tmp_path, hub):
    out = run_worker_side(tmp_path, hub.url, offline=True)
    err = out["error"]
    assert err["code"] == MODEL_UNAVAILABLE and REPO_ID in err["message"]
    assert "HF_HUB_OFFLINE" in err["message"] and "--model" in err["data"]["hint"]
    assert hub.log == []


def test_unreachable_hub_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_worker_side(tmp_path, f"http://127.0.0.1:{port}")
    err = out["error"]
    assert err["code"] == MODEL_UNAVAILABLE and err["data"]["field"] == "model"
    assert REPO_ID in err["message"] and "cannot reach" in err["message"]
    assert "--model /path/to/folder" in err["data"]["hint"]


def test_unknown_repo(tmp_path, hub):
    out = run_worker_side(tmp_path, hub.url, model="nobody/nothing")
    assert "no repo nobody/nothing" in out["error"]["message"]


def test_cli_download_shows_the_plan_then_progress(tmp_path, hub):
    cmd = ["-m", "shape_e_blender", "download", "--cache-dir", str(tmp_path / "c")]
    proc = run_python_ok(cmd, hub_env(tmp_path, hub.url), tmp_path)
    first, last = proc.stdout.strip().splitlines()[0], proc.stdout.strip().splitlines()[-1]
    assert first.startswith(f"{REPO_ID}: {len(TEXT_FILES)} files,") and "GiB of GPU memory" in first
    assert last.startswith("ready: ") and COMMIT in last
    assert "downloading" in proc.stderr  # the progress lines
    assert files_under(Path(last.removeprefix("ready: "))) == TEXT_FILES


def test_a_download_through_the_worker_stops_on_cancel(tmp_path, hub):
    hub.slow[BIG] = 0.3  # 12 MB: about 4 s
    w = WorkerProcess(tmp_path, env_extra=hub_env(tmp_path, hub.url) | {"HF_HUB_OFFLINE": "0"})
    try:
        rid = w.send("download", {"model": REPO_ID, "cache_dir": str(tmp_path / "cache")})
        while True:  # until bytes are flowing
            msg = w.next()
            assert msg.get("id") != rid, msg
            p = msg["params"]
            if p["stage"] == "downloading" and 0 < p["step"] < p["total"]:
                break
        cancel_id = w.send("cancel", {"id": rid})
        answers = {}
        while rid not in answers:
            msg = w.next()
            if "method" not in msg:
                answers[msg["id"]] = msg
        assert answers[cancel_id]["result"] == {"cancelled": True}
        err = answers[rid]["error"]
        assert err["code"] == CANCELLED and err["data"]["hint"]
        snapshots = list((tmp_path / "cache").glob("models--openai--shap-e/snapshots/*/prior"))
        assert not any((s / BIG.split("/")[1]).exists() for s in snapshots)
        status, _ = w.call("status")
        assert status["result"]["running"] is None
    finally:
        w.kill()
