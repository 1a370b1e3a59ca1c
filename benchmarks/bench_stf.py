"""STF extraction: dense grid 128 (what diffusers does) against coarse-to-fine at 128 and 256.

The field is an MLP that costs about as much per point as Shap-E's renderer MLP: the 93-wide
positional encoding (xyz, then sin and cos of 15 octaves), 6 SiLU layers 256 wide, and an output
head with the signed distance and RGB. Random weights give noise, so, as for the project's tiny
test models, the first layer ignores octaves >= 3 (the multiply still runs: same cost) and the
signed distance is a sphere of radius 0.5 bent by the MLP, then tanh-squashed like Shap-E's.

    /work/main/.venv/bin/python benchmarks/bench_stf.py [--threads N] [--grids 128 256] [--repeat N]
    /work/main/.venv/bin/python benchmarks/bench_stf.py --analytic 512

Run from the repository root. Prints one line per run (wall time, and the part of it spent
inside the field) and the ratios against dense 128.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from skimage.measure import marching_cubes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shape_e_blender.worker.mesh.stf import extract_mesh, grid_points

OCTAVES = 15
BATCH = 65536


class MlpField(torch.nn.Module):
    """Shap-E-sized implicit MLP: 93 -> 256 x 6 (SiLU) -> 4 (signed distance, RGB)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        widths = [3 + 6 * OCTAVES] + [256] * 6
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in pairwise(widths))
        self.head = torch.nn.Linear(256, 4)
        with torch.no_grad():
            # Layout [xyz, sin (3 x 15), cos (3 x 15)], octave-major: silence octaves >= 3.
            for start in (3, 3 + 3 * OCTAVES):
                self.hidden[0].weight[:, start + 9 : start + 3 * OCTAVES] = 0.0
            # Normalise the output to zero mean and unit spread over the box.
            self.shift, self.scale = torch.zeros(4), torch.ones(4)
            sample = self.raw(torch.rand(4096, 3) * 2 - 1)
            self.shift, self.scale = sample.mean(dim=0), sample.std(dim=0)
        self.points = 0
        self.seconds = 0.0

    def raw(self, p: torch.Tensor) -> torch.Tensor:
        freqs = 2.0 ** torch.arange(OCTAVES, dtype=p.dtype, device=p.device)
        angles = (p[:, None, :] * freqs[:, None]).reshape(len(p), -1)
        h = torch.cat([p, angles.sin(), angles.cos()], dim=1)
        for layer in self.hidden:
            h = torch.nn.functional.silu(layer(h))
        return (self.head(h) - self.shift) / self.scale

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        bend = 0.05 * self.raw(p)[:, 0]
        out = torch.tanh(10.0 * (0.5 - p.norm(dim=1) + bend))
        self.points += len(p)
        self.seconds += time.perf_counter() - start
        return out

    def color(self, p: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = torch.sigmoid(self.raw(p)[:, 1:])
        self.points += len(p)
        self.seconds += time.perf_counter() - start
        return out


def dense(field: MlpField, grid: int) -> tuple[int, int]:
    """Every grid point through the field, marching cubes, colours at the vertices."""
    points = grid_points(grid)
    with torch.inference_mode():
        values = torch.cat([field.sdf(points[i : i + BATCH]) for i in range(0, len(points), BATCH)])
    volume = np.pad(values.reshape(grid, grid, grid).numpy(), 1, constant_values=-1.0)
    verts, faces, _, _ = marching_cubes(volume, 0.0, gradient_direction="ascent")
    verts = torch.from_numpy((verts * (2.0 / (grid - 1)) - 1.0 - 2.0 / (grid - 1)).astype("f4"))
    with torch.inference_mode():
        for i in range(0, len(verts), BATCH):
            field.color(verts[i : i + BATCH])
    return len(verts), len(faces)


def analytic(grid: int) -> None:
    """Field evaluations, time and peak memory on a sphere and a torus (cheap analytic fields)."""
    import resource  # POSIX only, like this measurement

    def sphere(p: torch.Tensor) -> torch.Tensor:
        return 0.5 - p.norm(dim=1)

    def torus(p: torch.Tensor) -> torch.Tensor:
        return 0.2 - torch.sqrt((p[:, :2].norm(dim=1) - 0.5) ** 2 + p[:, 2] ** 2)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"peak RSS before: {base} MiB (Python + torch)")
    for name, fn in (("sphere r=0.5", sphere), ("torus R=0.5 r=0.2", torus)):
        count = [0]

        def counted(p: torch.Tensor, fn=fn, count=count) -> torch.Tensor:
            count[0] += len(p)
            return fn(p)

        start = time.perf_counter()
        mesh = extract_mesh(counted, lambda p: (p + 1) / 2, grid)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(
            f"{name:18s} grid {grid}: {count[0]:>10,d} SDF evaluations "
            f"({count[0] / grid**3:.3f} of dense {grid}, {count[0] / 128**3:.3f} of dense 128), "
            f"{seconds:.1f} s, {mesh.face_count:,d} faces, peak RSS so far {peak} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--grids", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best time counts")
    parser.add_argument(
        "--analytic", type=int, metavar="GRID", help="only count evaluations on analytic fields"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.analytic:
        analytic(args.analytic)
        return
    field = MlpField()
    dense(field, 32)  # warm-up: first-call allocations and imports off the clock
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, MLP 93-256x6-4")

    runs = [("dense", 128)] + [("coarse-to-fine", g) for g in args.grids]
    best: dict[tuple[str, int], tuple[int, float, float]] = {}
    for _ in range(args.repeat):
        for kind, grid in runs:
            field.points, field.seconds = 0, 0.0
            start = time.perf_counter()
            if kind == "dense":
                nv, nf = dense(field, grid)
            else:
                mesh = extract_mesh(field.sdf, field.color, grid, batch_size=BATCH)
                nv, nf = mesh.vertex_count, mesh.face_count
            seconds = time.perf_counter() - start
            print(
                f"{kind:15s} grid {grid:3d}: {field.points:>10,d} field evaluations "
                f"(SDF + colour), {seconds:6.1f} s ({field.seconds:6.1f} s in the field), "
                f"{nv:,d} vertices, {nf:,d} faces",
                flush=True,
            )
            previous = best.get((kind, grid))
            if previous is None or seconds < previous[1]:
                best[(kind, grid)] = (field.points, seconds, field.seconds)
    base_points, base_seconds, _ = best[runs[0]]
    print(f"\nbest of {args.repeat}, against dense 128:")
    for kind, grid in runs[1:]:
        points, seconds, _ = best[(kind, grid)]
        print(
            f"{kind} {grid}: {points / base_points:.3f}x the evaluations, "
            f"{seconds / base_seconds:.3f}x the time"
        )


if __name__ == "__main__":
    main()
