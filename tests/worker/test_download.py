"""Model folders, the cache, and downloads from a local stand-in for the hub (never the real one).

The stand-in is a stdlib HTTP server on 127.0.0.1 serving the endpoints huggingface_hub 2.4 calls
for ``HfApi.model_info(files_metadata=True)`` and ``hf_hub_download``: ``/api/models/{repo}``
(siblings with sizes) and ``/{repo}/resolve/{revision}/{file}`` (HEAD and GET, ETag,
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
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from shape_e_blender.core.errors import MODEL_UNAVAILABLE, ShapEError
from shape_e_blender.worker import download as dl

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "openai/shap-e"
COMMIT = "5c2e5c2e5c2e5c2e5c2e5c2e5c2e5c2e5c2e5c2e"
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
    """A few hub endpoints over a folder; records every request."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_once: set[str] = set()  # first GET of these stops at drop_at, connection cut
        self.drop_at = 11_000_000
        self.fail: set[str] = set()  # a GET of these answers 500 (HEAD still works)
        self.slow: dict[str, float] = {}  # a GET of these pauses this long after each MiB
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
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def gets(self, prefix: str = "/") -> list[str]:
        return [p for m, p, _ in self.log if m == "GET" and p.startswith(prefix)]

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
        if root is None or revision not in ("", "main", COMMIT):
            return self._send(req, 404, b"{}", {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            siblings.append({"rfilename": name, "size": path.stat().st_size, "blobId": _sha1(path)})
        info = {"id": repo_id, "sha": COMMIT, "private": False, "siblings": siblings}
        self._send(req, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _resolve(
        self, req: BaseHTTPRequestHandler, repo_id: str, revision: str, name: str, body: bool
    ) -> None:
        root = self.repos.get(repo_id)
        if root is None:
            return self._send(req, 404, b"", {"X-Error-Code": "RepoNotFound"})
        file = root / name
        if revision not in ("main", COMMIT) or not file.is_file():
            return self._send(req, 404, b"", {"X-Error-Code": "EntryNotFound"})
        if body and name in self.fail:
            return self._send(req, 500, b"server error", {})
        data = file.read_bytes()
        headers = {
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "X-Repo-Commit": COMMIT,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status, start = 200, 0
        wanted = req.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        payload = data[start:]
        if not body:
            headers["Content-Length"] = str(len(payload))
            return self._send(req, status, b"", headers, length_set=True)
        if name in self.drop_once:
            self.drop_once.discard(name)
            req.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                req.send_header(key, value)
            req.end_headers()
            req.wfile.write(payload[: self.drop_at])
            req.wfile.flush()
            req.connection.shutdown(socket.SHUT_RDWR)  # the network fails mid-file
            req.close_connection = True
            return None
        if name in self.slow:
            req.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                req.send_header(key, value)
            req.end_headers()
            for i in range(0, len(payload), 1 << 20):
                try:
                    req.wfile.write(payload[i : i + (1 << 20)])
                    req.wfile.flush()
                except OSError:  # the client hung up (a cancelled download)
                    return None
                time.sleep(self.slow[name])  # a slow network, not test synchronisation
            return None
        return self._send(req, status, payload, headers)

    @staticmethod
    def _send(
        req: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        headers: dict[str, str],
        length_set: bool = False,
    ) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        if not length_set:
            req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if payload:
            req.wfile.write(payload)


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture
def hub(tmp_path):
    stand_in = HubStandIn({REPO_ID: write_repo(tmp_path / "remote")})
    yield stand_in
    stand_in.close()


DRIVER = r"""
import json, sys
from shape_e_blender.core.errors import ShapEError
from shape_e_blender.worker import download as dl
args = json.loads(sys.argv[1])
events = []
try:
    if args["call"] == "download":
        path = dl.download(args["model"], kind=args["kind"], cache_dir=args["cache_dir"],
                           progress=lambda done, total: events.append([done, total]))
        out = {"path": str(path)}
    elif args["call"] == "plan":
        plan = dl.plan_download(args["model"], kind=args["kind"], cache_dir=args["cache_dir"])
        out = {"files": plan.files, "total": plan.total_bytes, "cached": plan.cached_bytes,
               "revision": plan.revision}
    else:
        path = dl.resolve_model(args["model"], kind=args["kind"],
                                allow_download=args["allow_download"], cache_dir=args["cache_dir"],
                                progress=lambda done, total: events.append([done, total]))
        out = {"path": str(path)}
    print(json.dumps({"ok": out, "progress": events}))
except ShapEError as err:
    print(json.dumps({"error": err.to_json(), "progress": events}))
"""


def run_worker_side(
    tmp_path: Path,
    endpoint: str,
    *,
    call: str = "resolve",
    kind: str = "text",
    allow_download: bool = True,
    offline: bool = False,
    model: str = REPO_ID,
) -> dict:
    env = hub_env(tmp_path, endpoint)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    args = {
        "call": call,
        "model": model,
        "kind": kind,
        "allow_download": allow_download,
        "cache_dir": str(tmp_path / "cache"),
    }
    proc = run_python(["-c", DRIVER, json.dumps(args)], env, tmp_path)
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


def _assert_progress(events: list[list[int]], total: int) -> None:
    done = [d for d, _ in events]
    assert all(t == total for _, t in events)
    assert done == sorted(done), "progress went backwards"
    assert done[0] == 0 and done[-1] == total


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
    # huggingface_hub writes in 10 MiB chunks: it resumes after the last whole chunk it received.
    assert start == 10 * 2**20 and start < hub.drop_at < size
    _assert_progress(
        out["progress"], sum((tmp_path / "remote" / n).stat().st_size for n in TEXT_FILES)
    )


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
