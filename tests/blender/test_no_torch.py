"""Blender never imports the worker's libraries: checked in a fresh process after a generation."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from tests.support import REPO, WORKER_PYTHON, run_child

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "skimage", "trimesh", "safetensors")

CHILD = """
import json, sys
import bpy
import addon_utils
assert addon_utils.enable("shape_e_blender", default_set=True) is not None
from shape_e_blender.blender import prefs, tasks
p = prefs.get()
p.worker_python, p.jobs_dir, p.text_model = sys.argv[4], sys.argv[1], sys.argv[2]
result = bpy.ops.shape_e.text_to_mesh(prompt="a cup", steps=2, grid_size=32)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[3].split(","))
ours = sorted(m for m in sys.modules if m.startswith("shape_e_blender"))
print("RESULT " + json.dumps({"result": sorted(result), "objects": tasks.status.objects,
                              "heavy": heavy, "ours": ours}), flush=True)
addon_utils.disable("shape_e_blender", default_set=True)
"""


@pytest.mark.main_blender
def test_a_generation_imports_no_torch_diffusers_or_transformers_into_blender(
    tmp_path, worker_text_model
):
    proc = run_child(
        sys.executable,
        "-c",
        CHILD,
        str(tmp_path),
        str(worker_text_model),
        ",".join(HEAVY),
        WORKER_PYTHON,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[len("RESULT ") :])
    assert out["result"] == ["FINISHED"] and out["objects"] == ["Cup"]
    assert "shape_e_blender.client.client" in out["ours"]
    assert out["heavy"] == []


def test_blender_side_sources_import_none_of_the_worker_libraries():
    package = REPO / "shape_e_blender"
    files = [*(package / "blender").glob("*.py"), *(package / "core").glob("*.py")]
    assert len(files) > 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom):
                # Relative: the Blender side must not reach into the worker package either.
                assert node.module is None or not node.module.startswith("worker"), path
                names = []
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in HEAVY, f"{Path(path).name} imports {name}"
