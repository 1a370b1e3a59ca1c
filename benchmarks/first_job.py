"""A first generation against a warm one, stage by stage, through the real WorkerClient.

Three ways of meeting a fresh worker (each in its own worker process):

- ``cold``: two jobs in a row; the first pays the worker's start (spawn to ``hello``: Python,
  torch), the engine's import (diffusers, transformers) and the model's load, the second none;
- ``loaded in advance``: what the panel's first draw does (``load``), then a job sent once the load
  is answered, as a Generate pressed a few seconds later;
- ``pressed during the load``: the load and a job sent together, as a Generate pressed at once; the
  job queues behind the load.

For each job: the worker's per-stage timings (``start`` is the client's), and the wall-clock seconds
from sending to the answer (what the user waits for). The model is the tiny random one unless
``--model`` names a folder; ``--full-size`` writes the text pipeline of the released sizes with
random weights (benchmarks/bench_pipeline.py builds it; about 2.7 GB in ``--work``) so that the load
is a real one.

    .venv/bin/python benchmarks/first_job.py
    .venv/bin/python benchmarks/first_job.py --full-size --steps 2 --grid 64 --json out/first.json

Prints a table; timings are reported, never checked.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from shape_e_blender.client.client import WorkerClient  # noqa: E402
from shape_e_blender.core.params import GenerationParams  # noqa: E402
from shape_e_blender.core.protocol import TIMING_LABELS, GenerateRequest  # noqa: E402

PROMPT = "a red chair"


DEVICE = {"name": "auto"}  # --device


def generate(client: WorkerClient, model: Path, steps: int, grid: int, seed: int):
    params = GenerationParams.create(
        prompt=PROMPT,
        model=str(model),
        seed=seed,
        steps=steps,
        grid_size=grid,
        device=DEVICE["name"],
    )
    return client.generate(GenerateRequest(params))


def answered(client: WorkerClient, job, what: str) -> dict[str, Any]:
    sent = job.sent_at
    client.wait(job, 3600)
    result = job.raise_for_error()
    return {"job": what, "wall_s": round(time.monotonic() - sent, 3), **result["timings"]}


def scenario(name: str, work: Path, model: Path, steps: int, grid: int) -> list[dict[str, Any]]:
    client = WorkerClient(sys.executable, work / name.replace(" ", "-"))
    try:
        if name == "cold":
            first = answered(client, generate(client, model, steps, grid, 0), "job 1")
            return [first, answered(client, generate(client, model, steps, grid, 1), "job 2")]
        load = client.load(str(model), "text", device=DEVICE["name"])
        if name == "loaded in advance":
            rows = [answered(client, load, "load")]
            return [*rows, answered(client, generate(client, model, steps, grid, 0), "job 1")]
        job = generate(client, model, steps, grid, 0)  # pressed during the load
        return [answered(client, load, "load"), answered(client, job, "job 1")]
    finally:
        client.shutdown()


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    stages = [s for s in TIMING_LABELS if any(s in r for rows in results.values() for r in rows)]
    head = ["scenario", "request", "waited (s)", *(TIMING_LABELS[s] for s in stages)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, rows in results.items():
        for r in rows:
            cells = [name, r["job"], f"{r['wall_s']:.2f}"]
            cells += [f"{r[s]:.2f}" if s in r else "" for s in stages]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a text model folder (default: a tiny random one)")
    ap.add_argument("--full-size", action="store_true", help="random weights, released sizes")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--work", type=Path, help="where models and jobs go (default: a temp folder)")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args(argv)
    DEVICE["name"] = args.device
    with tempfile.TemporaryDirectory(prefix="first-job-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = args.model or write_model(work, args.full_size)
        results = {
            name: scenario(name, work, model, args.steps, args.grid)
            for name in ("cold", "loaded in advance", "pressed during the load")
        }
    print(f"{platform.processor() or platform.machine()}, device {args.device}, {model}, steps "
          f"{args.steps}, grid {args.grid}")  # fmt: skip
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"model": str(model), "device": args.device, "steps": args.steps,
                  "grid": args.grid, "runs": results}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))
    return 0


def write_model(work: Path, full_size: bool) -> Path:
    """The tiny random text pipeline, or (``full_size``) the released sizes with random weights."""
    from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline  # torch: only here

    tiny = write_tiny_pipeline(work / "tiny-text", "text")
    if not full_size:
        return tiny
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_pipeline import build_pipeline, save_like_the_hub  # torch, diffusers

    folder = work / "full-size-text"
    pipe = build_pipeline(0, tiny / "tokenizer", kept_octaves=1, sdf_gain=1.0)
    print(f"wrote {save_like_the_hub(pipe, folder, tiny / 'tokenizer'):.2f} GB to {folder}")
    return folder


if __name__ == "__main__":
    raise SystemExit(main())
