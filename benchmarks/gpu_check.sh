#!/usr/bin/env bash
# The GPU check, as one command on a machine with an NVIDIA GPU and no network:
#
#   bash benchmarks/gpu_check.sh            (from the repository root; results under $OUT)
#
# 1. installs the wheels carried in .whl/ (diffusers, trimesh, and any of their dependencies or
#    pytest's that this Python lacks) into /tmp/site;
# 2. prints nvidia-smi and the versions the worker sees;
# 3. runs the tests that need CUDA (skipped on a machine without it) and the doctor's self-test;
# 4. generates with a tiny random model on cuda, text in fp16, fp32 and bf16, an image in fp16;
# 5. runs benchmarks/bench_pipeline.py at full size on cuda (fp32, fp16, bf16; 127 prior calls;
#    grids 128 and 256), writing $OUT/pipeline.json, then its decoding part alone on simpler
#    random shapes (grids 128 to 512), as shaped and 10x steeper, writing
#    $OUT/decode-octaves1-gain{1,10}.json (the shallow one with the dense reference at every grid);
#    then benchmarks/first_job.py: a fresh worker's first job against its second, $OUT/first-job.json;
# 6. if time is left, runs the whole worker test suite, where "auto" now means cuda.
#
# Each step has its own time limit, and no step starts past a shared deadline (DEADLINE seconds,
# default 500), so the script ends within the device call's limit and $OUT always holds the log
# ($OUT/log.txt), one line per step ($OUT/steps.txt) and whatever the steps wrote.
# benchmarks/README.md says how to fetch the wheels and how to call it.

set -uo pipefail # no -e: a failed step is recorded and the next one still runs

cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/gpu-check}
DEADLINE=${DEADLINE:-500}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
rm -rf "$WORK" && mkdir -p "$WORK"
: >"$OUT/steps.txt"
failures=0

# step NAME LIMIT_S COMMAND...: run COMMAND under a time limit, cut short by the deadline.
step() {
    local name=$1 limit=$2 left rc started
    shift 2
    left=$((DEADLINE - SECONDS - 5))
    if ((left < 20)); then
        echo "=== $name: not started, ${SECONDS} s of ${DEADLINE} s used ===" |
            tee -a "$OUT/steps.txt"
        failures=$((failures + 1))
        return 0
    fi
    ((limit > left)) && limit=$left
    echo
    echo "=== $name (limit ${limit} s, at ${SECONDS} s) ==="
    started=$SECONDS
    if declare -F "$1" >/dev/null; then # a function of this script: timeout needs a process
        timeout --kill-after=10 "$limit" bash -c "$1"
    else
        timeout --kill-after=10 "$limit" "$@"
    fi
    rc=$?
    ((rc == 124 || rc == 137)) && echo "(timed out after ${limit} s)"
    echo "=== $name: exit $rc in $((SECONDS - started)) s ===" | tee -a "$OUT/steps.txt"
    ((rc != 0)) && failures=$((failures + 1))
    return 0
}

install_wheels() {
    # Only what this Python lacks, so nothing of the machine's own is shadowed; diffusers and
    # trimesh always (the pinned versions the project is tested with).
    local needed
    needed=$("$PY" - <<'EOF'
import re
from importlib import metadata
from pathlib import Path

always = {"diffusers", "trimesh"}
for wheel in sorted(Path(".whl").glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if name in always or have is None:
        print(wheel)
    else:
        print(f"have {name} {have}: skipping {wheel.name}", file=__import__("sys").stderr)
EOF
    ) || return 1
    [[ -n $needed ]] || { echo "no wheels in .whl/: see benchmarks/README.md"; return 1; }
    echo "installing into $SITE:" $needed
    if "$PY" -m pip --version >/dev/null 2>&1; then
        # shellcheck disable=SC2086  # one word per wheel path
        "$PY" -m pip install -q --no-index --no-deps --target "$SITE" $needed || return 1
    else
        # No pip: a pure-Python wheel unpacked as it is is importable.
        echo "no pip: unpacking the wheels"
        # shellcheck disable=SC2086
        "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
            "$SITE" $needed || return 1
    fi
    # Test workers are started with a clean environment (no PYTHONPATH): a .pth file in a
    # site folder this Python reads puts $SITE on their path too, after the machine's own.
    "$PY" - "$SITE" <<'EOF'
import os
import site
import sys

folders = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
for folder in folders + site.getsitepackages():
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "shape_e_gpu_check.pth"), "w") as f:
            f.write(sys.argv[1] + "\n")
    except OSError:
        continue
    print(f"{sys.argv[1]} added to sys.path by {folder}/shape_e_gpu_check.pth")
    break
else:
    print("no writable site folder: worker subprocesses in the full test run will lack $SITE")
EOF
}

show_environment() {
    nvidia-smi || echo "(nvidia-smi failed)"
    "$PY" - <<'EOF'
import platform

import numpy
import torch

print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
print("numpy", numpy.__version__)
print("cuda available:", torch.cuda.is_available(), "| devices:", torch.cuda.device_count())
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())
for name in ("diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub",
             "tokenizers", "skimage", "scipy", "PIL", "trimesh", "pytest"):
    try:
        module = __import__(name)
        print(f"{name:16} {getattr(module, '__version__', '?'):12} {module.__file__}")
    except Exception as exc:  # report every missing or broken library, then go on
        print(f"{name:16} FAILED: {type(exc).__name__}: {exc}")
EOF
}

tiny_generations() {
    "$PY" -m shape_e_blender tiny-model "$WORK/tiny-text" || return 1
    "$PY" -m shape_e_blender tiny-model "$WORK/tiny-image" --image || return 1
    "$PY" - "$WORK/object.png" <<'EOF'
import sys

from PIL import Image, ImageDraw

image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
ImageDraw.Draw(image).ellipse((48, 64, 208, 224), fill=(200, 40, 30, 255))
image.save(sys.argv[1])
EOF
    local rc=0 precision
    for precision in fp16 fp32 bf16; do
        "$PY" -m shape_e_blender generate --prompt "a red chair" --model "$WORK/tiny-text" \
            --device cuda --precision "$precision" --steps 64 --grid-size 128 --no-download \
            --job-dir "$OUT/tiny-text-$precision" -o "$WORK/tiny-$precision.glb" || rc=1
    done
    "$PY" -m shape_e_blender generate --image "$WORK/object.png" --model "$WORK/tiny-image" \
        --device cuda --precision fp16 --steps 64 --grid-size 256 --no-download \
        --job-dir "$OUT/tiny-image-fp16" -o "$WORK/tiny-image.ply" || rc=1
    # The meshes stay behind (they are in the job folders' mesh.npz); the glTF export ran.
    rm -f "$OUT"/tiny-*/*/mesh.npz
    return $rc
}

decode_runs() {
    # The same surfaces with a shallow field (as shaped) and a 10x steeper one.
    local rc=0
    # Shallow at every grid of the plot (docs/performance.md), dense included; steep at three.
    "$PY" benchmarks/bench_pipeline.py --device cuda --no-prior --no-engine --kept-octaves 1 \
        --grids 64,128,256,384,512 --dense-grids 64,128,256,384,512 \
        --json "$OUT/decode-octaves1-gain1.json" || rc=1
    "$PY" benchmarks/bench_pipeline.py --device cuda --no-prior --no-engine --kept-octaves 1 \
        --sdf-gain 10 --grids 128,256,512 --json "$OUT/decode-octaves1-gain10.json" || rc=1
    return $rc
}

export PY SITE WORK OUT
export -f install_wheels show_environment tiny_generations decode_runs

echo "gpu_check: $(date -u +%FT%TZ) on $(hostname), repository $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
step "install carried wheels" 90 install_wheels
step "environment" 60 show_environment
step "doctor on cuda" 120 "$PY" -m shape_e_blender doctor --device cuda
step "CUDA tests (models/, mesh/test_field)" 180 \
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/worker/models tests/worker/mesh/test_field.py
step "tiny generations on cuda" 150 tiny_generations
step "full-size pipeline benchmark" 300 \
    "$PY" benchmarks/bench_pipeline.py --device cuda --precision fp32,fp16,bf16 --calls 127 \
    --warmup 2 --grids 128,256 --chunks 4096,16384,65536,262144,1048576 \
    --json "$OUT/pipeline.json"
step "decode benchmark, simpler shapes, shallow and steep" 150 decode_runs
step "first job against a warm one (tiny model)" 90 \
    "$PY" benchmarks/first_job.py --device cuda --json "$OUT/first-job.json"
step "whole worker test suite (auto = cuda)" 240 \
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/worker

echo
echo "gpu_check done in ${SECONDS} s, ${failures} step(s) failed or not run:"
cat "$OUT/steps.txt"
exit $((failures > 0))
