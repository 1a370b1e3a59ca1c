"""Headless command line: ``python -m shape_e_blender generate|download|doctor|tiny-model``.

Runs in the worker environment, in-process (no worker subprocess): the same Engine the worker uses.
Outside Blender the CLI is not bound by Blender's online-access setting: ``generate`` downloads
missing weights on first use (with a progress bar) unless ``--no-download`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from ..core import protocol
from ..core.arguments import add_arguments
from ..core.errors import INVALID_PARAMS, JOB_FAILED, ShapEError, invalid
from ..core.files import MISSING, probe
from ..core.mesh import SIZE_HELP, check_size
from ..core.params import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_TEXT_MODEL,
    SETTINGS,
    GenerationParams,
)
from ..core.weights import vram_estimate
from .mesh.export import check_output, export_mesh, variant_paths
from .paths import default_jobs_root
from .signals import interrupt_on_sigterm
from .tiny.sizes import TinySizes

log = logging.getLogger("shape_e_blender.cli")


class ProgressPrinter:
    """A progress bar on a terminal, a line per stage (and per 10%) in a log file or pipe."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.stage = ""
        self.decile = -1

    def __call__(self, p: protocol.Progress) -> None:
        frac = p.fraction if p.total else 0.0
        count = protocol.count_text(p.stage, p.step, p.total)
        eta = f", {protocol.duration_text(p.eta_s)} left" if p.eta_s else ""
        if self.tty:
            width = 30
            bar = "#" * int(frac * width)
            line = f"\r{p.stage:<11} [{bar:<{width}}] {count}{eta}"
            end = "\n" if p.step >= p.total else ""
            self.stream.write(f"{line:<72}{end}")
            self.stream.flush()
            return
        decile = int(frac * 10)
        # A stage without a count (loading: 0/1, then 1/1) gets its line once.
        if p.stage != self.stage or (count and decile > self.decile):
            self.stream.write(f"{p.stage}: {count}{eta}\n" if count else f"{p.stage}\n")
            self.stream.flush()
        self.stage, self.decile = p.stage, decile


def _fail(err: ShapEError) -> int:
    sys.stderr.write(f"error: {err.message}\n")
    if err.hint:
        sys.stderr.write(f"hint: {err.hint}\n")
    return 2 if err.code == INVALID_PARAMS else 1


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        params = GenerationParams.create(**{name: getattr(args, name) for name in SETTINGS})
        found, why = probe(args.output)
        if found == MISSING and why != "does not exist":  # a name too long, a link that loops
            raise invalid("output", f"{args.output} {why}", "choose another output path")
        check_output(args.output)  # before spending minutes on sampling
        args.size = check_size(args.size)
        request = protocol.GenerateRequest(
            params,
            job_dir=str(args.job_dir) if args.job_dir else None,
            allow_download=not args.no_download,
        )
        # torch: only once the arguments are known to be good, so that a mistake is told at once.
        from .engine import Engine

        engine = Engine(args.jobs_root or default_jobs_root(), cache_dir=args.cache_dir)
        started = time.perf_counter()
        result = engine.generate(request, emit=ProgressPrinter())
    except ShapEError as err:
        return _fail(err)

    outputs = variant_paths(args.output, len(result.meshes))
    failed = 0
    for entry, out in zip(result.meshes, outputs, strict=True):
        if entry.error is not None:
            failed += 1
            sys.stderr.write(
                f"variant {entry.variant}: {entry.error.message} ({entry.error.hint})\n"
            )
            continue
        try:
            export_mesh(entry.load().scaled_to(args.size), out)
        except OSError as exc:  # e.g. the disk filled up during the job
            return _fail(ShapEError(
                JOB_FAILED, f"output: could not write {out}: {exc.strerror or exc}",
                f"the meshes are kept in the job folder {result.job_dir}; free some space or "
                "choose another output, then export them from there", "output",
            ))  # fmt: skip
        seed = f" seed {entry.seed}" if entry.seed is not None else ""
        print(f"{out}: {entry.vertices} vertices, {entry.faces} faces{seed}")
        for warning in entry.warnings:
            sys.stderr.write(f"{out.name}: {warning}\n")
    print(f"job folder: {result.job_dir} ({time.perf_counter() - started:.1f} s)")
    return 1 if failed else 0


def cmd_download(args: argparse.Namespace) -> int:
    from .hub.download import download, plan_download  # huggingface_hub; no torch

    repo = args.model or (DEFAULT_IMAGE_MODEL if args.image else DEFAULT_TEXT_MODEL)
    kind = "image" if args.image else "text"
    printer = ProgressPrinter()
    try:
        plan = plan_download(repo, kind=kind, cache_dir=args.cache_dir)
        kept = ""
        if plan.cached_bytes or plan.partial_bytes:
            kept = (
                f" ({plan.needed_bytes / 1e6:.1f} MB to fetch: "
                f"{plan.cached_bytes / 1e6:.1f} MB cached, "
                f"{plan.partial_bytes / 1e6:.1f} MB kept from an interrupted download)"
            )
        print(
            f"{repo}: {len(plan.files)} files, {plan.total_bytes / 1e9:.2f} GB on disk{kept}; "
            f"generation needs about {vram_estimate(kind) / 2**30:.1f} GiB of GPU memory"
        )
        path = download(
            repo,
            kind=kind,
            cache_dir=args.cache_dir,
            progress=lambda done, total: printer(
                protocol.Progress(None, "downloading", done, total)
            ),
        )
    except ShapEError as err:
        return _fail(err)
    print(f"ready: {path}")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from .tiny.pipeline import write_tiny_pipeline  # torch, diffusers, transformers

    sizes = TinySizes.other() if args.other_sizes else TinySizes()
    try:
        path = write_tiny_pipeline(
            args.folder,
            "image" if args.image else "text",
            seed=args.seed,
            sizes=sizes,
            renderer_format="bin" if args.renderer_bin else "safetensors",
        )
    except OSError as exc:
        return _fail(invalid("folder", f"cannot write {args.folder}: {exc}", "choose a folder"))
    print(path)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    # torch, diffusers, transformers, huggingface_hub: what the doctor checks
    from .engine import Engine
    from .hub.download import resolve_model
    from .models.devices import device_report, versions
    from .tiny.pipeline import write_tiny_pipeline

    print("versions:")
    for name, version in versions().items():
        print(f"  {name:<13} {version}")
    print("devices:")
    for dev in device_report():
        mem = dev.get("memory_total")
        free = dev.get("memory_free")
        extra = f"  {free / 2**30:.1f} of {mem / 2**30:.1f} GiB free" if mem and free else ""
        print(f"  {dev['name']:<8} {dev['label']}{extra}")
    print("model cache:")
    for repo, kind in ((DEFAULT_TEXT_MODEL, "text"), (DEFAULT_IMAGE_MODEL, "image")):
        try:
            where = resolve_model(repo, kind=kind, allow_download=False, cache_dir=args.cache_dir)
            print(f"  {repo:<22} ready at {where}")
        except ShapEError as err:
            print(f"  {repo:<22} not downloaded ({err.hint})")

    print("self-test (tiny random model, offline):")
    tmp = Path(tempfile.mkdtemp(prefix="shape-e-doctor-"))
    try:
        model = write_tiny_pipeline(tmp / "model", "text")
        engine = Engine(tmp / "jobs")
        params = GenerationParams.create(
            prompt="self test", model=str(model), steps=4, grid_size=32, device=args.device
        )
        started = time.perf_counter()
        result = engine.generate(protocol.GenerateRequest(params))
        mesh = result.made[0].load()
        print(
            f"  ok: {mesh.vertex_count} vertices, {mesh.face_count} faces on "
            f"{result.params['device']} in {time.perf_counter() - started:.1f} s"
        )
    except ShapEError as err:
        print(f"  FAILED: {err}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shape_e_blender",
        description="Shap-E without Blender: generate meshes, fetch weights, check the setup. "
        "(`python -m shape_e_blender scene SPEC` generates a scene spec's objects: see its "
        "--help.)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="text, image or latent -> mesh file(s)")
    add_arguments(p, SETTINGS)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="out.glb, .ply, .obj or .npz; with N > 1 variants: out_0.glb ... out_{N-1}.glb",
    )
    p.add_argument("--size", type=float, default=0.0, metavar="M", help=f"the file's {SIZE_HELP}")
    p.add_argument("--job-dir", type=Path, help="keep this job's files here")
    p.add_argument("--jobs-root", type=Path, help="where job folders go by default")
    p.add_argument("--cache-dir", type=Path, help="model cache (default: Hugging Face cache)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("download", help="fetch the weights into the cache, with progress")
    p.add_argument("--image", action="store_true", help="the image model (openai/shap-e-img2img)")
    p.add_argument("--model", help="another hub repo id")
    p.add_argument("--cache-dir", type=Path, help="model cache (default: Hugging Face cache)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("doctor", help="report the environment and run an offline self-test")
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("tiny-model", help="write a tiny random pipeline (tests, self-test)")
    p.add_argument("folder", type=Path)
    p.add_argument("--image", action="store_true", help="an image-conditioned pipeline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--renderer-bin", action="store_true", help="renderer as pickled .bin")
    p.add_argument("--other-sizes", action="store_true", help="a second set of tiny sizes")
    p.set_defaults(func=cmd_tiny_model)
    return parser


def _told_once(record: logging.LogRecord) -> bool:
    """The console without what the command prints itself: a failed job's error (``error:``
    and ``hint:`` say it) and tracebacks (they are in the job's job.log; -v shows them)."""
    if record.exc_info:
        return False
    return not (record.name == "shape_e_blender.job" and record.levelno >= logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # The job log records INFO whatever the console shows.
    console = logging.getLogger().handlers[0]
    console.setLevel(logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        console.addFilter(_told_once)
    interrupt_on_sigterm()
    try:
        result: Any = args.func(args)
        sys.stdout.flush()  # here, not at exit: a failure to write is told below
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM anywhere: one line, no traceback
        sys.stderr.write("interrupted\n")
        return 130
    except OSError as exc:
        # What the commands do not catch themselves: the report's own lines, on a stdout whose
        # reader went away (`| head`: EPIPE, nothing more to say) or on a full disk.
        with contextlib.suppress(OSError, ValueError):  # no second error at exit's flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if exc.errno != errno.EPIPE:
            sys.stderr.write(f"error: cannot write the report: {exc.strerror or exc}\n")
        return 1
    return int(result)
