"""Security properties of the worker, each against a real worker subprocess: it opens no network
socket, never runs a model folder's own code (trust_remote_code), and names job folders so that
no prompt can choose where they go.

Kept elsewhere, with their own tests: nothing is unpickled across the boundary (latents and mesh
files: test_inputs.py, tests/core/test_mesh.py, tests/client/test_remote.py); weights from
safetensors, a pickle only with weights_only (tests/worker/models/test_loading.py and
test_weights.py); downloads in Blender only with online access (tests/blender/test_prefs.py); the
managed environment from a hash lock (tests/client/test_envsetup.py).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from .workerproc import REPO, WorkerProcess

FAST = {"steps": 2, "grid_size": 32}


def _sockets(pid: int) -> list[str]:
    """The sockets among a process's open files (Linux)."""
    fds = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(str(fd.readlink()))
        except OSError:  # closed meanwhile
            continue
    return [link for link in links if link.startswith("socket:")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/fd")
def test_the_worker_opens_no_socket_while_it_works(tiny_text_model, tmp_path):
    """No port to connect to: the worker talks on its stdin and stdout only."""
    worker = WorkerProcess(tmp_path)
    try:
        params = {"prompt": "a cup", "model": str(tiny_text_model), "steps": 2, "grid_size": 128}
        rid = worker.send("generate", params)
        while worker.next().get("params", {}).get("stage") != "decoding":
            pass
        assert _sockets(worker.proc.pid) == []  # mid-job: models loaded, decoding
        msg, _ = worker.response(rid)
        assert "result" in msg and _sockets(worker.proc.pid) == []
    finally:
        worker.kill()


MARKER_CODE = """
from pathlib import Path
Path({marker!r}).write_text("a model folder's code ran")
"""


def test_a_model_folders_own_code_is_never_run(tiny_text_model, tmp_path):
    """A folder whose configs point at code of its own (auto_map, as hub repos with custom
    models do) loads with the library's classes; its code would need trust_remote_code."""
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    marker = tmp_path / "code-ran"
    for component, auto in (
        ("text_encoder", {"AutoModel": "custom.Model", "AutoConfig": "custom.Config"}),
        ("tokenizer", {"AutoTokenizer": ["custom.Tokenizer", None]}),
    ):
        (folder / component / "custom.py").write_text(MARKER_CODE.format(marker=str(marker)))
        for config in (folder / component).glob("*config.json"):
            data = json.loads(config.read_text())
            config.write_text(json.dumps(data | {"auto_map": auto}))
    (folder / "custom.py").write_text(MARKER_CODE.format(marker=str(marker)))
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index | {"prior": ["custom", "Model"]}))
    worker = WorkerProcess(tmp_path)
    try:
        msg, _ = worker.call("generate", {"prompt": "a cup", "model": str(folder), **FAST})
        assert msg["result"]["meshes"][0]["faces"] > 0
    finally:
        worker.kill()
    assert not marker.exists()
    package = REPO / "shape_e_blender"
    assert not [p for p in package.rglob("*.py") if "trust_remote_code" in p.read_text()]


HOSTILE_PROMPTS = [
    "../../outside",
    "/etc/passwd",
    "..\\..\\windows\\system32",
    "CON",
    "~root/.ssh",
    "a\tb\nc",
    "模型 🪑 chair",
    "x" * 5000,
]


def test_no_prompt_chooses_where_its_job_folder_goes(tiny_text_model, tmp_path):
    """The folder is a child of the jobs root named by the time and a random id; the prompt adds
    only a short readable slug of [a-z0-9-]."""
    root = tmp_path / "jobs"
    root.mkdir()
    worker = WorkerProcess(root)
    try:
        for prompt in HOSTILE_PROMPTS:
            msg, _ = worker.call(
                "generate", {"prompt": prompt, "model": str(tiny_text_model), **FAST}
            )
            folder = Path(msg["result"]["job_dir"])
            assert folder.parent == root, prompt
            assert re.fullmatch(r"\d{8}-\d{6}-[a-z0-9-]{1,32}-[0-9a-f]{6}", folder.name), prompt
    finally:
        worker.kill()
    assert sorted(p.parent for p in root.iterdir()) == [root] * len(HOSTILE_PROMPTS)
    assert list(tmp_path.iterdir()) == [root]  # nothing written beside the jobs root
