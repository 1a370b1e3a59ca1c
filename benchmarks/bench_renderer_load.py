"""Loading the full-size renderer: the hub's pickled .bin against a safetensors copy, side by side.

The hub repos ship ``shap_e_renderer/`` (226 M parameters) only as a pickled
``diffusion_pytorch_model.bin``. This builds ``ShapERenderer()`` (the released config) with random
weights and saves it three ways: a .bin as diffusers saves it (``safe_serialization=False``: a
torch zip file), safetensors, and a .bin in torch's legacy (pre-1.6, not zip) format. Then it times
``models.loading.load_renderer`` on each folder, each time in a fresh Python process, alternating
the formats:

- ``load``: the ``load_renderer`` call alone (imports are timed apart and are the same for all);
- ``load + touch``: the load, then reading every parameter once. Both formats are memory-mapped,
  so a load may leave pages unread; touching them makes the first job's cost part of the figure;
- peak RSS of the process (``ru_maxrss``), and its resident memory after the load (anonymous and
  file-backed apart: memory-mapped weights are file-backed);
- the legacy .bin, which diffusers cannot memory-map, shows what a conversion would save if a
  checkpoint were in that format;
- ``warm``: the weight file is in the page cache (read just before); ``cold``: its pages were
  dropped from the page cache first (``posix_fadvise(DONTNEED)``, after ``fsync``), so the load
  reads the disk. Only the benchmark's own files are dropped.

The one-off conversion is timed too, also in fresh processes: writing the safetensors copy of a
renderer just loaded from the .bin (what a worker would do after its first load), and the whole
conversion from scratch (load the .bin, then write).

    python benchmarks/bench_renderer_load.py --repeat 5 --json out/renderer-load.json

Prints a table with medians and ratios; ``--json`` writes every single measurement. Needs about
3 GB in the temporary folder (``--work DIR`` to choose it and keep the files).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

WEIGHTS = {
    "bin": "diffusion_pytorch_model.bin",
    "safetensors": "diffusion_pytorch_model.safetensors",
}
# The folders saved: the two formats, plus a .bin in torch's legacy (pre-1.6, not zip) format,
# which diffusers cannot memory-map (it maps only zip files), for comparison.
FORMATS = {"bin": "bin", "safetensors": "safetensors", "bin-legacy": "bin"}


# --- the child: one measurement in a fresh process -------------------------------------------


def _status_kib() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in KiB (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def child(mode: str, folder: Path, dest: Path | None, threads: int) -> dict[str, Any]:
    start = time.perf_counter()
    import torch

    from shape_e_blender.worker.models.loading import load_renderer

    if threads:
        torch.set_num_threads(threads)
    out: dict[str, Any] = {"import_s": time.perf_counter() - start}
    before = _status_kib()
    out["rss_before_mib"] = _mib(before["VmRSS"])

    if mode == "convert-standalone":
        # The conversion on its own: read the pickle the way diffusers does, write safetensors.
        from safetensors.torch import save_file

        start = time.perf_counter()
        state = torch.load(
            folder / "shap_e_renderer" / WEIGHTS["bin"], weights_only=True, mmap=True
        )
        _write_atomically(dest, lambda tmp: save_file(state, str(tmp / WEIGHTS["safetensors"])))
        out["convert_s"] = time.perf_counter() - start
    else:
        start = time.perf_counter()
        renderer = load_renderer(folder)
        out["load_s"] = time.perf_counter() - start
        after = _status_kib()
        if mode == "load":
            start = time.perf_counter()
            with torch.no_grad():  # float32 sums: reads every page, allocates nothing large
                checksum = sum(float(p.sum()) for p in renderer.parameters())
            out["touch_s"] = time.perf_counter() - start
            out["checksum"] = checksum
        else:  # convert-after-load: what a worker would add after its first load from the .bin
            start = time.perf_counter()
            _write_atomically(
                dest, lambda tmp: renderer.save_pretrained(tmp, safe_serialization=True)
            )
            out["convert_s"] = time.perf_counter() - start
        out["rss_after_load_mib"] = _mib(after["VmRSS"])
        out["anon_after_load_mib"] = _mib(after["RssAnon"])
        out["file_after_load_mib"] = _mib(after["RssFile"])
    out["peak_rss_mib"] = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return out


def _write_atomically(dest: Path | None, write: Callable[[Path], object]) -> None:
    """Write into a temporary folder beside ``dest``, fsync the files, then rename it."""
    if dest is None:
        raise SystemExit("--dest is needed to time a conversion")
    shutil.rmtree(dest, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    write(tmp)
    for path in tmp.iterdir():
        with path.open("rb") as f:
            os.fsync(f.fileno())
    tmp.replace(dest)


# --- the parent ------------------------------------------------------------------------------


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache, so the next read goes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def run_child(args: argparse.Namespace, mode: str, folder: Path, dest: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--folder", str(folder)]
    if dest is not None:
        cmd += ["--dest", str(dest)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def build(work: Path, seed: int) -> dict[str, Any]:
    """Save one random full-size renderer in both formats; returns sizes and times."""
    import torch
    from diffusers.pipelines.shap_e import ShapERenderer

    torch.manual_seed(seed)
    renderer = ShapERenderer().eval()
    info: dict[str, Any] = {"parameters": sum(p.numel() for p in renderer.parameters())}
    for fmt, safe in (("bin", False), ("safetensors", True)):
        sub = work / fmt / "shap_e_renderer"
        start = time.perf_counter()
        renderer.save_pretrained(sub, safe_serialization=safe)
        info[f"save_{fmt}_s"] = round(time.perf_counter() - start, 2)
        info[f"{fmt}_mb"] = round((sub / WEIGHTS[fmt]).stat().st_size / 1e6, 1)
    legacy = work / "bin-legacy" / "shap_e_renderer"
    legacy.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "bin" / "shap_e_renderer" / "config.json", legacy)
    torch.save(renderer.state_dict(), legacy / WEIGHTS["bin"], _use_new_zipfile_serialization=False)
    return info


def machine() -> dict[str, Any]:
    from shape_e_blender.worker.models.devices import versions

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "versions": versions(),
    }


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def print_table(results: dict[str, Any]) -> None:
    info = results["build"]
    print(
        f"\nrenderer: {info['parameters']:,} parameters; .bin {info['bin_mb']} MB, "
        f"safetensors {info['safetensors_mb']} MB; median of {results['args']['repeat']} "
        "fresh processes each"
    )
    print(
        "| cache | format | load s | load + touch s | x .bin (load / + touch) | peak RSS MiB "
        "| RSS after load (anon + file) MiB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for cache in results["caches"]:
        rows = results["loads"][cache]
        base_load = median(rows["bin"], "load_s")
        base_both = statistics.median(r["load_s"] + r["touch_s"] for r in rows["bin"])
        for fmt in FORMATS:
            load = median(rows[fmt], "load_s")
            both = statistics.median(r["load_s"] + r["touch_s"] for r in rows[fmt])
            anon = median(rows[fmt], "anon_after_load_mib")
            filed = median(rows[fmt], "file_after_load_mib")
            print(
                f"| {cache} | {fmt} | {load:.3f} | {both:.2f} "
                f"| {load / base_load:.2f} / {both / base_both:.2f} "
                f"| {median(rows[fmt], 'peak_rss_mib'):.0f} "
                f"| {median(rows[fmt], 'rss_after_load_mib'):.0f} ({anon:.0f} + {filed:.0f}) |"
            )
    imports = [
        r["import_s"] for c in results["caches"] for f in FORMATS for r in results["loads"][c][f]
    ]
    print(
        f"\nimports (torch, diffusers, ours) per process: median {statistics.median(imports):.2f} s"
    )
    conv = results["convert"]
    for mode, rows in conv.items():
        print(
            f"conversion, {mode}: median {median(rows, 'convert_s'):.2f} s, "
            f"peak RSS {median(rows, 'peak_rss_mib'):.0f} MiB"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="fresh processes per format and cache")
    p.add_argument("--caches", default="warm,cold", help="comma list of warm, cold")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="keep the saved renderers here")
    p.add_argument("--json", type=Path, help="write every measurement here")
    p.add_argument("--child", choices=("load", "convert-after-load", "convert-standalone"))
    p.add_argument("--folder", type=Path)
    p.add_argument("--dest", type=Path)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.dest, args.threads)))
        return 0

    caches = [c for c in args.caches.split(",") if c]
    results: dict[str, Any] = {"machine": machine(), "args": dict(vars(args)), "caches": caches}
    with tempfile.TemporaryDirectory(prefix="bench-renderer-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("building and saving the full-size renderer ...", flush=True)
        results["build"] = build(work, args.seed)
        print(results["build"], flush=True)
        files = {fmt: work / fmt / "shap_e_renderer" / WEIGHTS[w] for fmt, w in FORMATS.items()}

        results["loads"] = {c: {fmt: [] for fmt in FORMATS} for c in caches}
        for i in range(args.repeat):
            for cache in caches:
                # Alternate the order, so drift in the machine's load hits every format.
                order = list(FORMATS) if i % 2 == 0 else list(reversed(FORMATS))
                for fmt in order:
                    (evict if cache == "cold" else warm)(files[fmt])
                    row = run_child(args, "load", work / fmt)
                    results["loads"][cache][fmt].append(row)
                    print(f"{cache} {fmt} #{i + 1}: {row}", flush=True)
        sums = {r["checksum"] for c in caches for f in FORMATS for r in results["loads"][c][f]}
        results["same_parameters"] = len(sums) == 1

        results["convert"] = {"after a load from the .bin": [], "standalone": []}
        for i in range(args.repeat):
            warm(files["bin"])
            row = run_child(args, "convert-after-load", work / "bin", work / "converted")
            results["convert"]["after a load from the .bin"].append(row)
            print(f"convert after load #{i + 1}: {row}", flush=True)
            warm(files["bin"])
            row = run_child(args, "convert-standalone", work / "bin", work / "converted")
            results["convert"]["standalone"].append(row)
            print(f"convert standalone #{i + 1}: {row}", flush=True)
        results["machine"]["load_average_end"] = os.getloadavg()

    print_table(results)
    print(f"same parameters from every format: {results['same_parameters']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
