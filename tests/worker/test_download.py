"""Model folders, the cache, and downloads from a local stand-in for the hub (never the real one).

The stand-in is a stdlib HTTP server on 127.0.0.1 serving the endpoints huggingface_hub 2.4 calls
for ``HfApi.model_info(files_metadata=True)`` and ``hf_hub_download``: ``/api/models/{repo}``
(siblings with sizes, and LFS sha256 for weights) and ``/{repo}/resolve/{revision}/{file}`` (HEAD
and GET, ETag: the sha256 for weights as for LFS files, the git blob id for the others,
X-Repo-Commit, Content-Length, Range). It never sends Xet headers, so plain HTTP is used.
huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so every call that may
touch the network runs in a subprocess with its own environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from shape_e_blender.core.errors import CANCELLED, MODEL_UNAVAILABLE, ShapEError
from shape_e_blender.worker import download as dl
from shape_e_blender.worker import fetch

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "openai/shap-e"
COMMIT = "5c2e5c2e5c2e5c2e5c2e5c2e5c2e5c2e5c2e5c2e"
NEW_COMMIT = "7d3f7d3f7d3f7d3f7d3f7d3f7d3f7d3f7d3f7d3f"
MIB = fetch.CHUNK_BYTES
BIG = "prior/diffusion_pytorch_model.fp16.safetensors"

# Laid out like the real openai/shap-e main branch: fp32 weights only as pickles, fp16 as
# safetensors, the renderer only as a .bin, and the legacy renderer/ folder.
FAKE_FILES = {
    ".gitattributes": 1_500,
    "README.md": 2_000,
    "model_index.json": 0,  # JSON text, written below
    "prior/config.json": 0,
    "prior/diffusion_pytorch_model.bin": 60_000,
    BIG: 12_000_000,  # above huggingface_hub's 10 MiB read chunk, so a cut can resume mid-file
    "text_encoder/config.json": 0,
    "text_encoder/pytorch_model.bin": 50_000,
    "text_encoder/model.fp16.safetensors": 200_000,
    "tokenizer/merges.txt": 3_000,
    "tokenizer/vocab.json": 0,
    "tokenizer/special_tokens_map.json": 0,
    "tokenizer/tokenizer_config.json": 0,
    "scheduler/scheduler_config.json": 0,
    "shap_e_renderer/config.json": 0,
    "shap_e_renderer/diffusion_pytorch_model.bin": 500_000,
    "renderer/config.json": 0,
    "renderer/diffusion_pytorch_model.bin": 300_000,
    "renderer/diffusion_pytorch_model.fp16.safetensors": 150_000,
}
TEXT_FILES = {
    "model_index.json",
    "prior/config.json",
    BIG,
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
    "shap_e_renderer/config.json",
    "shap_e_renderer/diffusion_pytorch_model.bin",
}


def write_repo(root: Path, files: dict[str, int] = FAKE_FILES) -> Path:
    rng = np.random.default_rng(7)
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if size:
            path.write_bytes(rng.bytes(size))
        else:
            path.write_text(json.dumps({"_file": name, "pad": "x" * 200}))
    return root


class HubStandIn:
    """A few hub endpoints over a folder; records every request and the body bytes it sent."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.commit = COMMIT
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.sent: dict[str, int] = {}  # body bytes written per file
        self.drop_once: set[str] = set()  # first GET of these stops at drop_at, connection cut
        self.drop_at = 11_000_000
        # first GET of these stops after that many bytes and waits for the event, then cuts
        self.stall: dict[str, tuple[int, threading.Event]] = {}
        self.fail: set[str] = set()  # a GET of these answers 500 (HEAD still works)
        self.slow: dict[str, float] = {}  # a GET of these pauses this long after each MiB
        self.ignore_range: set[str] = set()  # answered 200 with the whole file
        self.refuse_range: set[str] = set()  # a range request answers 416
        self.damage: set[str] = set()  # the body's first byte is flipped
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                stand_in.handle(self, body=False)

            def do_GET(self) -> None:
                stand_in.handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        for _, event in self.stall.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def gets(self, prefix: str = "/") -> list[str]:
        return [p for m, p, _ in self.log if m == "GET" and p.startswith(prefix)]

    def ranges(self, name: str) -> list[str | None]:
        """The Range header of each GET of ``name``."""
        return [r for m, p, r in self.log if m == "GET" and p.endswith(f"/{name}")]

    # -- routing ------------------------------------------------------------------------------

    def handle(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(req.path).path)
        with self._lock:
            self.log.append((req.command, path, req.headers.get("Range")))
        if path.startswith("/api/models/"):
            return self._model_info(req, path.removeprefix("/api/models/"))
        if "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, name = rest.partition("/")
            return self._resolve(req, repo_id, revision, name, body)
        return self._send(req, 404, b"not here", {"X-Error-Code": "EntryNotFound"})

    def _model_info(self, req: BaseHTTPRequestHandler, rest: str) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        root = self.repos.get(repo_id)
        if root is None or revision not in ("", "main", self.commit):
            return self._send(req, 404, b"{}", {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            data = path.read_bytes()
            entry = {"rfilename": name, "size": len(data), "blobId": _git_oid(data)}
            if _is_lfs(name):  # the hub lists the pointer's blob id and the file's sha256
                entry["blobId"] = _git_oid(
                    b"version https://git-lfs.github.com/spec/v1 " + data[:8]
                )
                entry["lfs"] = {"sha256": _sha256(data), "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        info = {"id": repo_id, "sha": self.commit, "private": False, "siblings": siblings}
        self._send(req, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _resolve(
        self, req: BaseHTTPRequestHandler, repo_id: str, revision: str, name: str, body: bool
    ) -> None:
        root = self.repos.get(repo_id)
        if root is None:
            return self._send(req, 404, b"", {"X-Error-Code": "RepoNotFound"})
        file = root / name
        if revision not in ("main", self.commit) or not file.is_file():
            return self._send(req, 404, b"", {"X-Error-Code": "EntryNotFound"})
        if body and name in self.fail:
            return self._send(req, 500, b"server error", {})
        data = file.read_bytes()
        headers = {
            "ETag": f'"{_sha256(data) if _is_lfs(name) else _git_oid(data)}"',
            "X-Repo-Commit": self.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status, start = 200, 0
        wanted = req.headers.get("Range")
        if wanted and name in self.refuse_range:
            return self._send(req, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        if wanted and name not in self.ignore_range:
            assert wanted.startswith("bytes=") and wanted.endswith("-"), wanted
            start = int(wanted[len("bytes=") : -1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        payload = data[start:]
        if name in self.damage:
            payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
        headers["Content-Length"] = str(len(payload))
        if not body:
            return self._send(req, status, b"", headers)
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.end_headers()
        stop, event = len(payload), None
        if name in self.drop_once:
            self.drop_once.discard(name)
            stop = self.drop_at
        elif name in self.stall:
            stop, event = self.stall.pop(name)
        for i in range(0, stop, 1 << 20):
            piece = payload[i : min(i + (1 << 20), stop)]
            try:
                req.wfile.write(piece)
                req.wfile.flush()
            except OSError:  # the client hung up (a cancelled or killed download)
                return None
            with self._lock:
                self.sent[name] = self.sent.get(name, 0) + len(piece)
            if name in self.slow:
                time.sleep(self.slow[name])  # a slow network, not test synchronisation
        if stop < len(payload):
            if event is not None:
                event.wait(60)  # until the test has killed the client
            req.connection.shutdown(socket.SHUT_RDWR)  # the network fails mid-file
            req.close_connection = True
        return None

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str]
    ) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        if "Content-Length" not in headers:
            req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if payload:
            req.wfile.write(payload)


def _is_lfs(name: str) -> bool:
    return name.endswith((".bin", ".safetensors"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def hub(tmp_path):
    stand_in = HubStandIn({REPO_ID: write_repo(tmp_path / "remote")})
    yield stand_in
    stand_in.close()


DRIVER = r"""
import json, logging, sys
from shape_e_blender.core.errors import ShapEError, cancelled
from shape_e_blender.worker import download as dl
args = json.loads(sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
events = []
def progress(done, total):
    events.append([done, total])
    if args["stream"]:
        print(json.dumps([done, total]), flush=True)
    if args["cancel_at"] is not None and done >= args["cancel_at"]:
        raise cancelled()
try:
    if args["call"] == "download":
        path = dl.download(args["model"], kind=args["kind"], cache_dir=args["cache_dir"],
                           progress=progress)
        out = {"path": str(path)}
    elif args["call"] == "plan":
        plan = dl.plan_download(args["model"], kind=args["kind"], cache_dir=args["cache_dir"])
        out = {"files": plan.files, "total": plan.total_bytes, "cached": plan.cached_bytes,
               "partial": plan.partial_bytes, "needed": plan.needed_bytes,
               "revision": plan.revision}
    else:
        path = dl.resolve_model(args["model"], kind=args["kind"],
                                allow_download=args["allow_download"], cache_dir=args["cache_dir"],
                                progress=progress)
        out = {"path": str(path)}
    print(json.dumps({"ok": out, "progress": events}))
except ShapEError as err:
    print(json.dumps({"error": err.to_json(), "progress": events}))
"""


def driver_args(
    tmp_path: Path,
    *,
    call: str = "resolve",
    kind: str = "text",
    allow_download: bool = True,
    model: str = REPO_ID,
    cancel_at: int | None = None,
    stream: bool = False,
) -> list[str]:
    """The command line of DRIVER; ``cancel_at``: a cancel once progress reaches that many bytes."""
    args = {
        "call": call,
        "model": model,
        "kind": kind,
        "allow_download": allow_download,
        "cache_dir": str(tmp_path / "cache"),
        "cancel_at": cancel_at,
        "stream": stream,
    }
    return ["-c", DRIVER, json.dumps(args)]


def run_worker_side(
    tmp_path: Path,
    endpoint: str,
    *,
    offline: bool = False,
    env_extra: dict[str, str] | None = None,
    **kwargs: Any,
) -> dict:
    env = hub_env(tmp_path, endpoint) | (env_extra or {})
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = run_python(driver_args(tmp_path, **kwargs), env, tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """This environment pointed at the stand-in hub, with no hub settings of this machine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE", "PYTHON", "TRANSFORMERS_OFFLINE"))
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf_home"),  # no token or settings from this machine
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO),
    )
    return env


def run_python(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _assert_progress(events: list[list[int]], total: int, start: int = 0) -> None:
    done = [d for d, _ in events]
    assert all(t == total for _, t in events)
    assert done == sorted(done), "progress went backwards"
    assert done[0] == start and done[-1] == total


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
    return _blobs(tmp_path) / f"{_sha256(data)}.incomplete"


# ---- file selection (no network) -------------------------------------------------------------


def test_text_selection_is_exact():
    assert set(dl.select_files(FAKE_FILES, "text", source=REPO_ID)) == TEXT_FILES


def test_image_and_renderer_selection():
    files = {k: v for k, v in FAKE_FILES.items() if not k.startswith(("text_", "tokenizer/"))}
    files |= {
        "image_encoder/config.json": 0,
        "image_encoder/pytorch_model.bin": 1,
        "image_encoder/model.fp16.safetensors": 1,
        "image_processor/preprocessor_config.json": 0,
    }
    image = set(dl.select_files(files, "image", source="openai/shap-e-img2img"))
    assert image == {
        "model_index.json",
        "prior/config.json",
        BIG,
        "image_encoder/config.json",
        "image_encoder/model.fp16.safetensors",
        "image_processor/preprocessor_config.json",
        "scheduler/scheduler_config.json",
        "shap_e_renderer/config.json",
        "shap_e_renderer/diffusion_pytorch_model.bin",
    }
    assert set(dl.select_files(files, "renderer", source="x/y")) == {
        "model_index.json",
        "shap_e_renderer/config.json",
        "shap_e_renderer/diffusion_pytorch_model.bin",
    }


def test_an_image_encoder_with_only_a_pickle_is_fetched_but_a_text_encoder_is_refused():
    files = {k: v for k, v in FAKE_FILES.items() if not k.startswith(("text_", "tokenizer/"))}
    files |= {
        "image_encoder/config.json": 0,
        "image_encoder/pytorch_model.bin": 1,
        "image_processor/preprocessor_config.json": 0,
    }
    image = set(dl.select_files(files, "image", source="openai/shap-e-img2img"))
    assert "image_encoder/pytorch_model.bin" in image
    text = {k: v for k, v in FAKE_FILES.items() if k != "text_encoder/model.fp16.safetensors"}
    with pytest.raises(ShapEError) as err:
        dl.select_files(text, "text", source=REPO_ID)
    assert "text_encoder/" in err.value.message and "pickled" in err.value.message


def test_full_precision_safetensors_are_preferred_when_present():
    files = dict(FAKE_FILES)
    files["prior/diffusion_pytorch_model.safetensors"] = 1
    files["shap_e_renderer/diffusion_pytorch_model.safetensors"] = 1
    chosen = set(dl.select_files(files, "text", source=REPO_ID))
    assert "prior/diffusion_pytorch_model.safetensors" in chosen and BIG not in chosen
    assert "shap_e_renderer/diffusion_pytorch_model.safetensors" in chosen
    assert "shap_e_renderer/diffusion_pytorch_model.bin" not in chosen  # no pickle when avoidable


def test_sharded_safetensors_come_with_their_index():
    files = {k: v for k, v in FAKE_FILES.items() if not k.startswith("prior/")}
    files |= {
        "prior/config.json": 0,
        "prior/diffusion_pytorch_model-00001-of-00002.safetensors": 1,
        "prior/diffusion_pytorch_model-00002-of-00002.safetensors": 1,
        "prior/diffusion_pytorch_model.safetensors.index.json": 1,
    }
    prior = {f for f in dl.select_files(files, "text", source=REPO_ID) if f.startswith("prior/")}
    assert prior == {
        "prior/config.json",
        "prior/diffusion_pytorch_model-00001-of-00002.safetensors",
        "prior/diffusion_pytorch_model-00002-of-00002.safetensors",
        "prior/diffusion_pytorch_model.safetensors.index.json",
    }


def test_pickle_only_prior_is_refused():
    files = {k: v for k, v in FAKE_FILES.items() if k != BIG}
    with pytest.raises(ShapEError) as err:
        dl.select_files(files, "text", source=REPO_ID)
    assert err.value.code == MODEL_UNAVAILABLE
    assert "prior/" in err.value.message and "pickled checkpoints are refused" in err.value.message


def test_repo_without_the_component_kind_needs():
    with pytest.raises(ShapEError) as err:
        dl.select_files(FAKE_FILES, "image", source=REPO_ID)
    assert "image_encoder/" in err.value.message and "img2img" in err.value.hint


# ---- local folders (no network) --------------------------------------------------------------


def _complete_folder(root: Path) -> Path:
    return write_repo(root, {k: v for k, v in FAKE_FILES.items() if k in TEXT_FILES})


def test_complete_local_folder_is_used_as_it_is(tmp_path):
    folder = _complete_folder(tmp_path / "model")
    assert dl.resolve_model(str(folder), kind="text") == folder
    assert dl.resolve_model(str(folder), kind="renderer") == folder
    assert dl.weight_variant(folder, "prior") == "fp16"
    assert dl.weight_variant(folder, "shap_e_renderer") is None


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("text_encoder", "text_encoder/"),
        (BIG, "prior/ weights (safetensors)"),
        ("tokenizer/merges.txt", "tokenizer/vocab.json + merges.txt or tokenizer.json"),
        ("model_index.json", "model_index.json"),
        ("shap_e_renderer/diffusion_pytorch_model.bin", "shap_e_renderer/ weights"),
    ],
)
def test_local_folder_missing_a_part_names_it(tmp_path, remove, named):
    folder = _complete_folder(tmp_path / "model")
    target = folder / remove
    if target.is_dir():
        for p in target.iterdir():
            p.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(str(folder), kind="text")
    assert err.value.code == MODEL_UNAVAILABLE and err.value.field == "model"
    assert str(folder) in err.value.message and named in err.value.message
    assert err.value.hint


def test_a_pickled_prior_in_a_local_folder_is_refused(tmp_path):
    folder = _complete_folder(tmp_path / "model")
    (folder / BIG).rename(folder / "prior" / "diffusion_pytorch_model.bin")
    with pytest.raises(ShapEError, match="prior/ weights"):
        dl.resolve_model(str(folder), kind="text")


def test_image_kind_on_a_text_folder(tmp_path):
    folder = _complete_folder(tmp_path / "model")
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(str(folder), kind="image")
    assert "image_encoder/" in err.value.message and "image_processor/" in err.value.message


def test_missing_folder_and_file_paths(tmp_path):
    with pytest.raises(ShapEError, match="does not exist"):
        dl.resolve_model(str(tmp_path / "no" / "such"), kind="text")
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"x")
    with pytest.raises(ShapEError, match="is a file"):
        dl.resolve_model(str(a_file), kind="text")


# ---- the cache without the network -------------------------------------------------------------


def test_empty_cache_without_download_names_the_repo_and_the_ways_out(tmp_path):
    with pytest.raises(ShapEError) as err:
        dl.resolve_model(REPO_ID, kind="text", cache_dir=tmp_path / "cache")
    e = err.value
    assert e.code == MODEL_UNAVAILABLE and e.field == "model"
    assert REPO_ID in e.message and "not in the model cache" in e.message
    assert "python -m shape_e_blender download" in e.hint and "--model /path/to/folder" in e.hint
    with pytest.raises(ShapEError) as err:
        dl.resolve_model("openai/shap-e-img2img", kind="image", cache_dir=tmp_path / "cache")
    assert "download --image" in err.value.hint


# ---- downloads from the stand-in ---------------------------------------------------------------


def test_download_fetches_exactly_the_needed_files_with_byte_progress(tmp_path, hub):
    out = run_worker_side(tmp_path, hub.url)
    assert "ok" in out, out
    folder = Path(out["ok"]["path"])
    assert folder == tmp_path / "cache" / "models--openai--shap-e" / "snapshots" / COMMIT
    assert _files_under(folder) == TEXT_FILES
    for name in TEXT_FILES:
        assert (folder / name).read_bytes() == (tmp_path / "remote" / name).read_bytes()
    total = sum((tmp_path / "remote" / name).stat().st_size for name in TEXT_FILES)
    _assert_progress(out["progress"], total)
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
    _assert_progress(out["progress"], _total(tmp_path))


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
    assert _files_under(Path(second["ok"]["path"])) == TEXT_FILES
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
    assert hashlib.sha256(fetched).hexdigest() == _sha256(data)
    assert not part.exists()
    # The two files before it were finished, and 5 MiB of it were on disk: the bar starts there.
    _assert_progress(out["progress"], _total(tmp_path), start=before + cut)


def test_a_cancelled_download_keeps_its_partial_file_and_the_plan_counts_it(tmp_path, hub):
    data, cut, before = _remote(tmp_path, BIG), 3 * MIB, _bytes_before(tmp_path, BIG)
    first = run_worker_side(tmp_path, hub.url, call="download", cancel_at=before + cut)
    assert first["error"]["code"] == CANCELLED
    part = _partial(tmp_path, data)
    assert part.read_bytes() == data[:cut]
    assert not (_blobs(tmp_path) / _sha256(data)).exists()

    plan = run_worker_side(tmp_path, hub.url, call="plan")["ok"]
    assert plan["cached"] == before and plan["partial"] == cut
    assert plan["needed"] == _total(tmp_path) - before - cut  # what the disk check asks for
    hub.log.clear()
    hub.sent.clear()
    out = run_worker_side(tmp_path, hub.url, call="download")
    assert hub.ranges(BIG) == [f"bytes={cut}-"] and hub.sent[BIG] == len(data) - cut
    assert (Path(out["ok"]["path"]) / BIG).read_bytes() == data
    _assert_progress(out["progress"], _total(tmp_path), start=before + cut)


def test_the_cli_says_what_is_kept_then_fetches_only_the_rest(tmp_path, hub):
    data, cut, before = _remote(tmp_path, BIG), 3 * MIB, _bytes_before(tmp_path, BIG)
    run_worker_side(tmp_path, hub.url, call="download", cancel_at=before + cut)
    hub.log.clear()
    hub.sent.clear()
    cmd = ["-m", "shape_e_blender", "download", "--cache-dir", str(tmp_path / "cache")]
    proc = run_python(cmd, hub_env(tmp_path, hub.url), tmp_path)
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
    _assert_progress(out["progress"], _total(tmp_path), start=before + cut)


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
        _assert_progress(out["progress"], _total(tmp_path), start=3 * MIB)
    else:  # longer than the file: not resumable
        assert hub.ranges(BIG) == [None] and hub.sent[BIG] == len(data)
        _assert_progress(out["progress"], _total(tmp_path))


def test_damaged_bytes_from_the_hub_are_a_clear_error_and_not_kept(tmp_path, hub):
    data = _remote(tmp_path, BIG)
    hub.damage.add(BIG)
    out = run_worker_side(tmp_path, hub.url, call="download")
    err = out["error"]
    assert err["code"] == MODEL_UNAVAILABLE and err["data"]["field"] == "model"
    assert f"download {BIG} of {REPO_ID}" in err["message"] and "sha256" in err["message"]
    assert "again" in err["data"]["hint"] and "proxy" in err["data"]["hint"]
    assert hub.ranges(BIG) == [None]  # fresh bytes that fail the check are not fetched twice
    assert not list(_blobs(tmp_path).glob(f"{_sha256(data)}*"))  # neither blob nor partial


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
    from filelock import FileLock

    data, held = _remote(tmp_path, BIG), 4 * MIB
    lock_path = tmp_path / "cache" / ".locks" / "models--openai--shap-e" / f"{_sha256(data)}.lock"
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


# ---- what the loader must do to read what was fetched -------------------------------------------


def test_loader_contract_for_fp16_safetensors_and_the_renderer_bin(tmp_path):
    """The variant reported by weight_variant() loads with from_pretrained, up-cast to fp32."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    from diffusers.pipelines.shap_e.renderer import ShapERenderer

    torch.manual_seed(0)
    folder = tmp_path / "model"
    prior = diffusers.PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=1,
        embedding_dim=8,
        num_embeddings=4,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
        clip_embed_dim=16,
    ).half()
    prior.save_pretrained(folder / "prior", variant="fp16")
    text = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            projection_dim=8,
            vocab_size=64,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).half()
    text.save_pretrained(folder / "text_encoder", variant="fp16")
    renderer = ShapERenderer(
        param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)), d_latent=16, d_hidden=8, n_hidden_layers=6
    )
    renderer.save_pretrained(folder / "shap_e_renderer", safe_serialization=False)
    names = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*.*") if "weights" not in p.name
    }
    assert {BIG, "text_encoder/model.fp16.safetensors"} <= names

    assert dl.weight_variant(folder, "prior") == "fp16"
    assert dl.weight_variant(folder, "text_encoder") == "fp16"
    assert dl.weight_variant(folder, "shap_e_renderer") is None

    p2 = diffusers.PriorTransformer.from_pretrained(
        folder,
        subfolder="prior",
        variant=dl.weight_variant(folder, "prior"),
        use_safetensors=True,
        torch_dtype=torch.float32,
    )
    t2 = transformers.CLIPTextModelWithProjection.from_pretrained(
        folder,
        subfolder="text_encoder",
        variant=dl.weight_variant(folder, "text_encoder"),
        use_safetensors=True,
        dtype=torch.float32,  # transformers 5 would keep the checkpoint's fp16 otherwise
    )
    r2 = ShapERenderer.from_pretrained(folder, subfolder="shap_e_renderer")
    for before, after in ((prior, p2), (text, t2), (renderer, r2)):
        for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True):
            assert b.dtype == (torch.float32 if a.is_floating_point() else a.dtype)
            assert torch.equal(a.to(b.dtype), b)


def test_vram_estimate_follows_the_parameter_counts():
    assert dl.vram_estimate("text") == (316 + 123 + 226) * 10**6 * 4
    assert dl.vram_estimate("image") == (316 + 303 + 226) * 10**6 * 4
    assert dl.vram_estimate("renderer") == 226 * 10**6 * 4


def test_cli_download_shows_the_plan_then_progress(tmp_path, hub):
    cmd = ["-m", "shape_e_blender", "download", "--cache-dir", str(tmp_path / "c")]
    proc = run_python(cmd, hub_env(tmp_path, hub.url), tmp_path)
    first, last = proc.stdout.strip().splitlines()[0], proc.stdout.strip().splitlines()[-1]
    assert first.startswith(f"{REPO_ID}: {len(TEXT_FILES)} files,") and "GiB of GPU memory" in first
    assert last.startswith("ready: ") and COMMIT in last
    assert "downloading" in proc.stderr  # the progress lines
    assert _files_under(Path(last.removeprefix("ready: "))) == TEXT_FILES


def test_a_download_through_the_worker_stops_on_cancel(tmp_path, hub):
    from shape_e_blender.core.errors import CANCELLED

    from .workerproc import WorkerProcess

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
