"""Plot decoding time and added memory against grid size, ours and the dense reference, from the
JSON that bench_pipeline.py writes (``--json``), run with the same grids for both:

    .venv/bin/python benchmarks/bench_pipeline.py --device cpu --no-prior --no-engine \\
        --kept-octaves 1 --grids 64,128,256,384,512 --dense-grids 64,128,256,384,512 \\
        --json out/decode-grids.json
    .venv/bin/python benchmarks/plot_decode.py out/decode-grids.json docs/images/decode-vs-grid.png

``--memory`` takes the memory from another run of the same command (a run on a busy machine still
measures memory well, not time).

Needs matplotlib (``pip install matplotlib``; the tests do not).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def series(rows: list[dict[str, Any]], prefix: str, key: str) -> tuple[list[int], list[float]]:
    picked = sorted((r["grid"], r[key]) for r in rows if r["method"].startswith(prefix))
    return [g for g, _ in picked], [v for _, v in picked]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument(
        "--memory", type=Path, help="take the added memory from this run's JSON instead (its rows)"
    )
    args = ap.parse_args(argv)
    import matplotlib  # only this script needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(args.json.read_text())
    rows = results["decode"]["rows"]
    memory_rows = json.loads(args.memory.read_text())["decode"]["rows"] if args.memory else rows
    m = results["machine"]
    fig, (time_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for prefix, label, style in (
        ("dense", "dense reference (every grid point, chunks of 4,096)", "o--"),
        ("extract_mesh", "ours (coarse to fine)", "s-"),
    ):
        grids, seconds = series(rows, prefix, "wall_s")
        time_ax.plot(grids, seconds, style, label=label)
        grids, gib = series(memory_rows, prefix, "added_gib")
        mem_ax.plot(grids, gib, style, label=label)
    time_ax.set(xlabel="grid size (points per axis)", ylabel="decode time (s)", yscale="log")
    time_ax.set_title("field, marching cubes and colours")
    mem_ax.set(xlabel="grid size (points per axis)", ylabel="memory added while decoding (GiB)")
    mem_ax.set_title("over what was in use before")
    for ax in (time_ax, mem_ax):
        ax.set_xticks(sorted({r["grid"] for r in rows if r.get("grid")}))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Decoding one latent, full-size renderer with random weights; {m['cpu']}, "
        f"{m['torch_threads']} torch threads",
        fontsize=9,
    )
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
