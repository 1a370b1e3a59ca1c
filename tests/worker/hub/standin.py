"""A local stand-in for the hub (never the real one), a repo laid out like openai/shap-e, and a
driver that runs the worker's download code in a subprocess against it.

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
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from shape_e_blender.worker.hub import fetch

from ..workerproc import child_env, run_python

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
            entry = {"rfilename": name, "size": len(data), "blobId": git_oid(data)}
            if _is_lfs(name):  # the hub lists the pointer's blob id and the file's sha256
                entry["blobId"] = git_oid(b"version https://git-lfs.github.com/spec/v1 " + data[:8])
                entry["lfs"] = {"sha256": sha256(data), "size": len(data), "pointerSize": 134}
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
            "ETag": f'"{sha256(data) if _is_lfs(name) else git_oid(data)}"',
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


DRIVER = r"""
import json, logging, sys
from shape_e_blender.core.errors import ShapEError, cancelled
from shape_e_blender.worker.hub import download as dl
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
    proc = run_python_ok(driver_args(tmp_path, **kwargs), env, tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """A child's environment pointed at the stand-in hub, with no hub settings of this machine."""
    env = {
        k: v
        for k, v in child_env().items()
        if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS_OFFLINE"))
    }
    return env | {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf_home"),  # no token or settings from this machine
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def run_python_ok(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``python ARGS``, which must succeed."""
    proc = run_python(*args, env=env, cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def assert_progress(events: list[list[int]], total: int, start: int = 0) -> None:
    done = [d for d, _ in events]
    assert all(t == total for _, t in events)
    assert done == sorted(done), "progress went backwards"
    assert done[0] == start and done[-1] == total
