"""``python -m shape_e_blender scene SPEC.toml --jobs-dir DIR [--workers N | --ray ADDRESS]``.

Generates every object of a scene spec into job folders, in the worker environment, without
Blender. Objects whose key already has a finished folder are skipped. The Blender build of the
same spec with the same jobs folder then imports them without generating anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from ..core.errors import ShapEError
from ..core.params import SETTINGS
from ..core.protocol import Progress
from ..core.spec import load_spec
from ..worker.signals import interrupt_on_sigterm
from .jobs import Job, plan
from .local import devices_for, run_local


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m shape_e_blender scene",
        description="Generate every object of a scene spec into job folders, on N local "
        "workers (one per GPU) or on a Ray cluster. Blender then builds the scene from them.",
    )
    ap.add_argument("spec", help="the scene spec (.toml; docs/scenes.md)")
    ap.add_argument("--jobs-dir", required=True, help="where the job folders go")
    ap.add_argument(
        "--workers",
        type=int,
        help="local workers, one per GPU: cuda:0 .. cuda:N-1 (default 1); with --ray, the "
        "number of actors (default: one per GPU of the cluster)",
    )
    ap.add_argument("--ray", metavar="ADDRESS", help="run on this Ray cluster (host:port, or auto)")
    for name in ("device", "precision"):
        s = SETTINGS[name]
        ap.add_argument(s.flag, help=f"{s.description} (with --workers: for all of them)")
    for kind in ("text", "image"):
        ap.add_argument(f"--{kind}-model", help=f"the model of {kind} objects that name none")
    ap.add_argument("--no-download", dest="allow_download", action="store_false",
                    help="never fetch weights from the hub")  # fmt: skip
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_sigterm()  # SIGTERM stops the workers as Ctrl+C does
    if args.workers is not None and args.workers < 1:
        print("error: --workers: must be 1 or more", file=sys.stderr)
        return 2
    common = {n: getattr(args, n) for n in ("device", "precision") if getattr(args, n)}
    try:
        spec = load_spec(
            args.spec, text_model=args.text_model, image_model=args.image_model, common=common
        )
    except ShapEError as err:
        print(f"error: {err.message}\nhint: {err.hint}", file=sys.stderr)
        return 2
    root = Path(args.jobs_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan(spec, root)
    report = Report(jobs, sys.stderr)
    for job in jobs:
        if job.reused:
            report.done(job)
    started = time.perf_counter()
    try:
        if args.ray:
            from .ray_actors import run_ray  # Ray is an optional extra: only this run needs it

            run_ray(jobs, root, args.ray, device=args.device, actors=args.workers,
                    on_progress=report.progress, on_done=report.done,
                    allow_download=args.allow_download)  # fmt: skip
        else:
            run_local(
                jobs,
                devices_for(args.workers or 1, args.device),
                root,
                python=sys.executable,
                on_progress=report.progress,
                on_done=report.done,
                allow_download=args.allow_download,
            )
    except KeyboardInterrupt:
        print("interrupted: finished objects are kept and reused next time", file=sys.stderr)
        return 130
    except ShapEError as err:
        print(f"error: {err.message}\nhint: {err.hint}", file=sys.stderr)
        return 1
    failed = [j for j in jobs if not j.ok]
    made = sum(j.ok and not j.reused for j in jobs)
    print(
        f"{spec.path.name}: {made} generated, {sum(j.reused for j in jobs)} reused, "
        f"{len(failed)} failed in {time.perf_counter() - started:.1f} s; jobs in {root}"
    )
    return 1 if failed else 0


class Report:
    """A line per object as it finishes, and a line per stage of each running one."""

    def __init__(self, jobs: list[Job], out: TextIO) -> None:
        self.count = len(jobs)
        self.out = out
        self.stages: dict[int, str] = {}

    def _head(self, job: Job) -> str:
        return f"[{job.obj.index}/{self.count}] {job.obj.name}"

    def progress(self, job: Job, p: Progress) -> None:
        if self.stages.get(job.obj.index) != p.stage:
            self.stages[job.obj.index] = p.stage
            print(f"{self._head(job)}: {p.stage} on {job.where}", file=self.out, flush=True)

    def done(self, job: Job) -> None:
        if job.error is not None:
            line = f"failed: {job.error}"
        elif job.reused:
            line = f"reused {job.folder}"
        else:
            line = f"generated on {job.where} into {job.folder}"
        print(f"{self._head(job)}: {line}", flush=True)
