"""Soak: many tiny-model jobs in a row through one worker, with cancels and bad requests mixed in.

One real WorkerClient and its worker subprocess run a seeded random plan of ``--jobs`` generate
requests: most are normal tiny jobs (steps 2-4, grid 32, variants 1-2, some with an explicit
job_dir), ``--cancels`` are cancelled (at the first sampling progress, or right after sending),
``--bad`` are bad requests (an unknown parameter, a wrong JSON type, a missing image file, a
garbage latent file) that must come back as invalid_params naming the field.

After every job it checks the files (each job folder holds request.json and exactly one of
result.json / error.json, no ``*.part`` anywhere, every mesh.npz loads, has faces and matches the
result) and that the worker is the same process, and samples the worker's RSS and thread count
(/proc/<pid>/status, Linux) and the client's threads. At the end it shuts the worker down and
checks that no process of its group and no client thread is left.

    .venv/bin/python benchmarks/soak.py --jobs 200 --out /tmp/soak200.json
    .venv/bin/python benchmarks/soak.py --jobs 25 --cancels 3 --bad 4 --model /path/to/tiny-text

Prints one line per job and a summary; ``--out`` gets the JSON report. Exit status 1 when a check
failed (the report's "problems" lists them; the work folder is then kept). Timings are reported,
never checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from shape_e_blender.client.client import WorkerClient  # noqa: E402
from shape_e_blender.client.handle import JobHandle  # noqa: E402
from shape_e_blender.core.errors import CANCELLED, INVALID_PARAMS, ShapEError  # noqa: E402
from shape_e_blender.core.mesh import MeshData  # noqa: E402
from shape_e_blender.core.params import GenerationParams  # noqa: E402
from shape_e_blender.core.protocol import GenerateRequest  # noqa: E402

PROMPTS = ("a red chair", "a vase", "a small wooden boat", "a desk lamp", "a mug, tall & blue")
BAD_KINDS = ("unknown_param", "wrong_type", "missing_image", "garbage_latent")
# A wrong JSON type for a parameter, and the field the error must name.
WRONG_TYPES = (("steps", "3"), ("grid_size", 32.5), ("seed", True), ("variants", [1]))
FIT_FROM = 10  # the RSS fit and min/max start after this job: the first ones load the model
DEFAULT_PYTHON = os.environ.get("SHAPE_E_WORKER_PYTHON") or str(REPO / ".venv" / "bin" / "python")


@dataclass
class Planned:
    """One job of the plan."""

    index: int  # 1-based
    kind: str  # normal, cancel, bad
    prompt: str = "a red chair"
    seed: int = 0
    steps: int = 2
    variants: int = 1
    job_dir: bool = False  # an explicit job_dir (under the work folder's explicit/)
    cancel_at: str = ""  # cancel: "sampling" or "sent"
    bad: str = ""  # bad: one of BAD_KINDS
    wrong: tuple[str, Any] | None = None  # bad wrong_type: (field, value)


def make_plan(jobs: int, cancels: int, bad: int, seed: int) -> list[Planned]:
    """A seeded plan; job 1 is always normal (it imports the engine and loads the model)."""
    if cancels + bad > jobs - 1:
        raise ValueError("cancels + bad must leave at least the first job normal")
    rng = random.Random(seed)
    kinds = ["cancel"] * cancels + ["bad"] * bad + ["normal"] * (jobs - 1 - cancels - bad)
    rng.shuffle(kinds)
    kinds.insert(0, "normal")
    plan = []
    bad_seen = 0
    for i, kind in enumerate(kinds, 1):
        p = Planned(i, kind, prompt=rng.choice(PROMPTS), seed=rng.randrange(0, 2**31))
        if kind == "normal":
            p.steps, p.variants = rng.randint(2, 4), rng.randint(1, 2)
            p.job_dir = rng.random() < 0.3
        elif kind == "cancel":
            # Long enough that the cancel arrives while it samples.
            p.steps, p.variants = rng.randint(150, 300), rng.randint(1, 2)
            p.job_dir = rng.random() < 0.5
            p.cancel_at = rng.choice(("sampling", "sent"))
        else:
            p.bad = BAD_KINDS[bad_seen % len(BAD_KINDS)]
            if p.bad == "wrong_type":
                p.wrong = WRONG_TYPES[(bad_seen // len(BAD_KINDS)) % len(WRONG_TYPES)]
            p.job_dir = rng.random() < 0.5
            bad_seen += 1
        plan.append(p)
    return plan


# -- /proc ---------------------------------------------------------------------------------------


def proc_status(pid: int | str) -> dict[str, int]:
    """VmRSS (kB) and Threads of a process from /proc/<pid>/status; {} where there is none."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def process_group(pgid: int) -> list[dict[str, Any]]:
    """The processes whose group is ``pgid`` (the worker leads its own group), with state."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid:
            found.append({"pid": int(stat.parent.name), "state": fields[0]})
    return found


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs."""
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


# -- one job -------------------------------------------------------------------------------------


class Soak:
    def __init__(self, client: WorkerClient, model: Path, work: Path, timeout: float) -> None:
        self.client = client
        self.model = model
        self.work = work
        self.roots = (client.jobs_root, work / "explicit")
        self.timeout = timeout
        self.known: set[Path] = set()
        self.events: dict[int, list] = {}  # job id -> its progress, while it runs

    def pump(self, *jobs: JobHandle) -> None:
        """Poll until every job is done (events drained, progress kept per job)."""
        deadline = time.monotonic() + self.timeout
        while not all(j.done for j in jobs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {self.timeout:g} s: {jobs}")
            self._take(self.client.poll(timeout=0.25))
        self._take(self.client.poll())

    def _take(self, events: list) -> None:
        for e in events:
            if e.progress is not None:
                self.events.setdefault(e.job.id, []).append(e.progress)

    def new_folders(self) -> list[Path]:
        found = {p for root in self.roots if root.is_dir() for p in root.iterdir() if p.is_dir()}
        new = sorted(found - self.known)
        self.known |= found
        return new

    def folder_problems(self, folders: list[Path]) -> list[str]:
        out = []
        for f in folders:
            if not (f / "request.json").is_file():
                out.append(f"{f}: no request.json")
            ends = [n for n in ("result.json", "error.json") if (f / n).is_file()]
            if len(ends) != 1:
                out.append(f"{f}: {ends or 'neither result.json nor error.json'}")
        parts = sorted(str(p) for p in self.work.rglob("*.part"))
        if parts:
            out.append(f"*.part files left: {parts}")
        return out

    def job_dir_for(self, p: Planned) -> Path | None:
        return self.roots[1] / f"job-{p.index:04d}" if p.job_dir else None

    def run(self, p: Planned) -> dict[str, Any]:
        kinds = {"normal": self.normal, "cancel": self.cancel, "bad": self.bad}
        try:
            outcome, problems, folders = kinds[p.kind](p)
        except (KeyError, TypeError, ValueError) as exc:  # an answer not shaped as documented
            outcome, problems, folders = "failed", [f"job {p.index}: {exc!r}"], self.new_folders()
        # Every folder so far, not only this job's: a later job must not disturb an earlier one.
        problems += self.folder_problems(sorted(self.known))
        return {"outcome": outcome, "problems": problems, "folders": len(folders)}

    def _request(self, p: Planned) -> GenerateRequest:
        params = GenerationParams.create(
            prompt=p.prompt,
            model=str(self.model),
            seed=p.seed,
            steps=p.steps,
            grid_size=32,
            variants=p.variants,
        )
        job_dir = self.job_dir_for(p)
        return GenerateRequest(params, job_dir=str(job_dir) if job_dir else None)

    def normal(self, p: Planned) -> tuple[str, list[str], list[Path]]:
        job = self.client.generate(self._request(p))
        self.pump(job)
        folders = self.new_folders()
        if job.error is not None:
            return "failed", [f"job {p.index}: {job.error.code} {job.error}"], folders
        problems = self.check_result(p, job.result, folders)
        steps = [g.step for g in self.events.pop(job.id, []) if g.stage == "sampling"]
        if steps != list(range(1, 2 * p.steps)):
            problems.append(f"job {p.index}: sampling progress {steps}")
        return "done", problems, folders

    def check_result(self, p: Planned, result: Any, folders: list[Path]) -> list[str]:
        """The result against its folder and its files."""
        where = f"job {p.index}"
        job_dir = Path(result["job_dir"])
        explicit = self.job_dir_for(p)
        out = []
        if folders != [job_dir] or (explicit is not None and job_dir != explicit):
            out.append(f"{where}: job_dir {job_dir}, new folders {folders}")
        try:
            on_disk = json.loads((job_dir / "result.json").read_text())
            request = json.loads((job_dir / "request.json").read_text())
        except (OSError, ValueError) as exc:
            return [*out, f"{where}: {exc}"]
        if on_disk != result:
            out.append(f"{where}: result.json differs from the answer")
        if request.get("request", {}).get("seed") != p.seed or "resolved" not in request:
            out.append(f"{where}: request.json {request}")
        echo = result["params"]
        if (echo["seed"], echo["steps"], echo["grid_size"], echo["variants"]) != (
            p.seed,
            p.steps,
            32,
            p.variants,
        ):
            out.append(f"{where}: params echo {echo}")
        meshes = result["meshes"]
        if [m.get("variant") for m in meshes] != list(range(p.variants)):
            out.append(f"{where}: variants {[m.get('variant') for m in meshes]}")
        for i, m in enumerate(meshes):
            if "error" in m:
                out.append(f"{where}: variant {i} failed: {m['error']}")
                continue
            if m.get("seed") != (p.seed + i) % 2**31:
                out.append(f"{where}: variant {i} seed {m.get('seed')}")
            path = Path(m["path"])
            if path.parent.parent != job_dir:
                out.append(f"{where}: mesh {path} outside {job_dir}")
            try:
                mesh = MeshData.load(path)
            except (OSError, ValueError, KeyError) as exc:
                out.append(f"{where}: {path} does not load: {exc}")
                continue
            counts = (mesh.vertex_count, mesh.face_count)
            if mesh.face_count == 0 or counts != (m["vertices"], m["faces"]):
                out.append(f"{where}: {path} has {counts}, the result says {m}")
            lo, hi = mesh.bounds()
            got = [*lo.tolist(), *hi.tolist()]
            said = [*m["bounds"][0], *m["bounds"][1]]
            if max(abs(a - b) for a, b in zip(got, said, strict=True)) > 1e-4:
                out.append(f"{where}: {path} bounds {got}, the result says {said}")
            if not Path(m["latent"]).is_file():
                out.append(f"{where}: no latent {m['latent']}")
        return out

    def cancel(self, p: Planned) -> tuple[str, list[str], list[Path]]:
        where = f"job {p.index}"
        job = self.client.generate(self._request(p))
        if p.cancel_at == "sampling":
            deadline = time.monotonic() + self.timeout
            while not job.done and (job.progress is None or job.progress.stage != "sampling"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{where}: no sampling progress")
                self._take(self.client.poll(timeout=0.25))
        answer = self.client.cancel(job)
        if answer is None:
            self.pump(job)
            return "failed", [f"{where}: no worker to cancel on"], self.new_folders()
        self.pump(job, answer)
        self.events.pop(job.id, None)
        folders = self.new_folders()
        problems = []
        if answer.result == {"cancelled": False} and job.error is None:
            # The job ended before the cancel arrived: it must be a whole result.
            return "cancel_late", self.check_result(p, job.result, folders), folders
        if answer.result != {"cancelled": True}:
            problems.append(f"{where}: cancel answered {answer.result} {answer.error}")
        if job.error is None or job.error.code != CANCELLED:
            problems.append(f"{where}: the cancelled job answered {job.error or job.result}")
        last = job.progress
        if last is not None and last.stage == "sampling" and last.step >= last.total:
            problems.append(f"{where}: sampling ran to the end: {last}")
        if len(folders) > 1 or (p.cancel_at == "sampling" and len(folders) != 1):
            problems.append(f"{where}: new folders {folders}")
        for f in folders:
            problems += self._error_file(where, f, CANCELLED, None)
        return "cancelled", problems, folders

    def _error_file(self, where: str, folder: Path, code: int, field: str | None) -> list[str]:
        try:
            err = json.loads((folder / "error.json").read_text())["error"]
        except (OSError, ValueError, KeyError) as exc:
            return [f"{where}: {folder}/error.json: {exc}"]
        data = err.get("data", {})
        if err.get("code") != code or (field is not None and data.get("field") != field):
            return [f"{where}: {folder}/error.json holds {err}"]
        return []

    def bad_params(self, p: Planned) -> tuple[dict[str, Any], str, bool]:
        """The raw params, the field the error must name, and whether the job runs (and so
        makes a folder) before it fails."""
        params: dict[str, Any] = {"prompt": p.prompt, "model": str(self.model), "steps": 2}
        params["grid_size"] = 32
        job_dir = self.job_dir_for(p)
        if job_dir is not None:
            params["job_dir"] = str(job_dir)
        if p.bad == "unknown_param":
            params["colour"] = "red"
            return params, "colour", False
        if p.bad == "wrong_type":
            assert p.wrong is not None
            name, value = p.wrong
            params[name] = value
            return params, name, False
        del params["prompt"]
        if p.bad == "missing_image":
            params["image"] = str(self.work / "inputs" / f"missing-{p.index}.png")
            return params, "image", True
        garbage = self.work / "inputs" / f"garbage-{p.index}.npy"
        garbage.parent.mkdir(parents=True, exist_ok=True)
        garbage.write_bytes(random.Random(p.seed).randbytes(4096))
        params["latent"] = str(garbage)
        return params, "latent", True

    def bad(self, p: Planned) -> tuple[str, list[str], list[Path]]:
        where = f"job {p.index} ({p.bad})"
        params, field, runs = self.bad_params(p)
        problems = []
        try:
            result = self.client.call("generate", params, self.timeout)
            problems.append(f"{where}: accepted: {str(result)[:300]}")
        except ShapEError as err:
            if err.code != INVALID_PARAMS or err.field != field or not err.hint:
                problems.append(f"{where}: {err.code} field {err.field!r}: {err} (want {field})")
        self._take(self.client.poll())
        folders = self.new_folders()
        if len(folders) != (1 if runs else 0):
            problems.append(f"{where}: new folders {folders}")
        for f in folders:
            problems += self._error_file(where, f, INVALID_PARAMS, field)
        return "refused", problems, folders


# -- the whole run -------------------------------------------------------------------------------


def tiny_model(python: str, folder: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO)
    cmd = [python, "-m", "shape_e_blender", "tiny-model", str(folder)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"tiny-model failed:\n{proc.stderr[-3000:]}")
    return folder


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    rss = [r["rss_kb"] for r in records]
    tail = [(r["index"], r["rss_kb"]) for r in records[FIT_FROM - 1 :] if r["rss_kb"] is not None]
    fit = slope([float(i) for i, _ in tail], [float(v) for _, v in tail])
    own = [(r["index"], r["client_rss_kb"]) for r in records[FIT_FROM - 1 :] if r["client_rss_kb"]]
    own_fit = slope([float(i) for i, _ in own], [float(v) for _, v in own])
    wt = [r["worker_threads"] for r in records if r["worker_threads"] is not None]
    ct = [r["client_threads"] for r in records]
    return {
        "rss_mb": {
            "after_job_1": mb(rss[0]) if rss else None,
            "after_job_5": mb(rss[4]) if len(rss) >= 5 else None,
            f"after_job_{FIT_FROM}": mb(rss[FIT_FROM - 1]) if len(rss) >= FIT_FROM else None,
            f"min_from_job_{FIT_FROM}": mb(min(v for _, v in tail)) if tail else None,
            f"max_from_job_{FIT_FROM}": mb(max(v for _, v in tail)) if tail else None,
            "last": mb(rss[-1]) if rss else None,
            "growth_per_100_jobs": None if fit is None else round(fit * 100 / 1024, 2),
            "fit": f"least squares over jobs {FIT_FROM}..{len(records)}",
        },
        "client_rss_mb": {
            f"after_job_{FIT_FROM}": mb(own[0][1]) if own else None,
            "last": mb(own[-1][1]) if own else None,
            "growth_per_100_jobs": None if own_fit is None else round(own_fit * 100 / 1024, 2),
        },
        "worker_threads": {"min": min(wt, default=None), "max": max(wt, default=None)},
        "client_threads": {"min": min(ct, default=None), "max": max(ct, default=None)},
    }


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    model = Path(args.model) if args.model else tiny_model(args.python, work / "tiny-text")
    plan = make_plan(args.jobs, args.cancels, args.bad, args.seed)
    before = {t.ident for t in threading.enumerate()}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    client = WorkerClient(args.python, work / "jobs", env=env)
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    info = client.hello()
    pid = client.pid
    assert pid is not None
    if info.get("pid") != pid:
        problems.append(f"hello says pid {info.get('pid')}, the process is {pid}")
    runner = Soak(client, model, work, args.job_timeout)
    pids = {pid}  # every worker pid seen after a job: one, unless the worker was restarted
    group_before: list[dict[str, Any]] = []
    try:
        for p in plan:
            t0 = time.perf_counter()
            try:
                rec = runner.run(p)
            except TimeoutError as exc:
                problems.append(f"job {p.index}: {exc}; stopped here")
                break
            status = proc_status(pid)
            rec.update(
                index=p.index,
                kind=p.kind,
                what=p.bad or p.cancel_at or f"steps {p.steps} x{p.variants}",
                seconds=round(time.perf_counter() - t0, 2),
                rss_kb=status.get("VmRSS"),
                worker_threads=status.get("Threads"),
                client_threads=threading.active_count(),
                client_rss_kb=proc_status("self").get("VmRSS"),
                reader_threads=len(client.threads_alive()),
            )
            pids.add(client.pid)
            if client.pid != pid:
                rec["problems"].append(f"job {p.index}: worker pid {client.pid}, was {pid}")
            problems += rec["problems"]
            records.append(rec)
            if not args.quiet:
                print(
                    f"{p.index:4d} {p.kind:<7} {rec['what']:<15} {rec['outcome']:<11} "
                    f"{rec['seconds']:6.2f} s  rss {mb(rec['rss_kb'])} MB  "
                    f"threads {rec['worker_threads']}/{rec['client_threads']}"
                    + (f"  PROBLEM {rec['problems']}" if rec["problems"] else ""),
                    flush=True,
                )
        group_before = process_group(pid)
    finally:
        client.shutdown()
    # The worker's last words in its log: it left by itself, every job answered, not killed.
    log = client.log_path.read_text(encoding="utf-8", errors="replace")
    clean_exit = "every job answered; exiting" in log.rsplit("--- worker started", 1)[-1]
    if not clean_exit:
        problems.append(f"the worker did not exit by itself; see {client.log_path}")
    group_after = [q for seen in sorted(pids, key=str) if seen for q in process_group(seen)]
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    if group_after:
        problems.append(f"processes of the worker's group left after shutdown: {group_after}")
    if client.threads_alive() or left:
        problems.append(f"client threads left after shutdown: {client.threads_alive()} {left}")
    counts = {k: sum(r["outcome"] == k for r in records) for k in ("done", "cancelled")}
    counts |= {k: sum(r["outcome"] == k for r in records) for k in ("cancel_late", "refused")}
    counts["failed"] = sum(r["outcome"] == "failed" for r in records)
    return {
        "command": "benchmarks/soak.py " + " ".join(args.argv),
        "config": {k: v for k, v in vars(args).items() if k != "argv"} | {"model": str(model)},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "worker_versions": info.get("versions"),
        },
        "jobs_run": len(records),
        "counts": counts,
        "worker_pid": pid,
        "worker_pids": sorted(pids, key=str),
        **summarize(records),
        "worker_group_before_shutdown": group_before,
        "worker_clean_exit": clean_exit,
        "worker_group_after_shutdown": group_after,
        "client_threads_left": left,
        "wall_s": round(time.perf_counter() - started, 1),
        "problems": problems,
        "plan": [asdict(p) for p in plan],
        "jobs": records,
    }


def print_summary(report: dict[str, Any]) -> None:
    rows = [
        ("jobs run", report["jobs_run"]),
        *((f"  {k}", v) for k, v in report["counts"].items()),
        ("worker pids seen", report["worker_pids"]),
        *((f"worker RSS MB {k.replace('_', ' ')}", v) for k, v in report["rss_mb"].items()),
        *((f"client RSS MB {k.replace('_', ' ')}", v) for k, v in report["client_rss_mb"].items()),
        ("worker threads min/max", "{min}/{max}".format(**report["worker_threads"])),
        ("client threads min/max", "{min}/{max}".format(**report["client_threads"])),
        ("worker exited by itself", report["worker_clean_exit"]),
        ("worker group after shutdown", report["worker_group_after_shutdown"]),
        ("client threads left", report["client_threads_left"]),
        ("wall time (s)", report["wall_s"]),
        ("problems", len(report["problems"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for q in report["problems"]:
        print(f"PROBLEM: {q}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--cancels", type=int, default=None, help="default: 10%% of the jobs")
    parser.add_argument("--bad", type=int, default=None, help="default: 5%% of the jobs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random plan")
    parser.add_argument("--model", default=None, help="a tiny model folder (default: make one)")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="the worker's interpreter")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="a hang guard, seconds")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    parser.add_argument("--quiet", action="store_true", help="no line per job")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.cancels = round(args.jobs * 0.10) if args.cancels is None else args.cancels
    args.bad = round(args.jobs * 0.05) if args.bad is None else args.bad
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="shape_e_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    report = soak(args, work)
    report["work"] = str(work)
    print_summary(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if report["problems"] or args.keep or args.work:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
