"""The renderer's MLP on the CPU while other processes want the same cores.

A worker on a CPU shares it with Blender (its UI, the viewport, a render) and, in a pipeline,
with other workers. torch runs its CPU kernels on an OpenMP team of one thread per core, and
GNU OpenMP's threads spin while they wait for each other: on a busy machine one of them is
often descheduled, and the rest spin until it comes back. This script times the signed-distance
MLP (full-size renderer, random weights, a random latent; 131,072 points through
``LatentField.sdf``) in a fresh process per setting, with 0 or more busy processes beside it:

- ``default``: torch's default team, OpenMP's default (active) wait policy;
- ``passive``: the same team with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep);
- ``one``: a single thread (``OMP_NUM_THREADS=1``).

    python benchmarks/bench_threads.py                       # busy 0, 1 and 3; 3 repeats
    python benchmarks/bench_threads.py --busy 0,2 --repeat 5 --json out/threads.json

Prints microseconds per point (the best of the repeats, wall time) for each setting and load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one": {"OMP_NUM_THREADS": "1"},
}

# Run in a fresh interpreter for each setting: OpenMP reads its variables when torch loads it.
CHILD = """
import sys, time, torch
sys.path.insert(0, {root!r})
from diffusers.pipelines.shap_e import ShapERenderer
from shape_e_blender.worker.mesh.field import LatentField, latent_shape
from shape_e_blender.worker.tiny.renderer import shape_renderer
torch.manual_seed(2)
renderer = shape_renderer(ShapERenderer().eval(), 0, kept_octaves=3)
gen = torch.Generator().manual_seed(0)
field = LatentField(renderer, torch.randn(latent_shape(renderer), generator=gen), "cpu")
points = torch.rand(131072, 3, generator=gen) * 2 - 1
field.sdf(points[:8192])
times = []
for _ in range({repeat}):
    start = time.perf_counter()
    field.sdf(points)
    times.append(time.perf_counter() - start)
print(torch.get_num_threads(), min(times) / len(points) * 1e6)
"""

BUSY = "while True: pass"


def measure(setting: str, busy: int, repeat: int) -> dict[str, float | int | str]:
    env = {**os.environ, **SETTINGS[setting]}
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0.0)  # let the busy processes get going
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=str(ROOT), repeat=repeat)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return {"setting": setting, "busy": busy, "threads": int(out[0]), "us_per_point": float(out[1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", default="0,1,3", help="comma list of busy processes beside it")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per process (best kept)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma list of settings")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    rows = []
    for busy in [int(b) for b in args.busy.split(",")]:
        for setting in args.settings.split(","):
            row = measure(setting, busy, args.repeat)
            rows.append(row)
            print(
                f"busy {busy}: {setting:<8} ({row['threads']} threads) "
                f"{row['us_per_point']:6.2f} us a point",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
