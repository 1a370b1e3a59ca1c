"""A spec's jobs on a Ray cluster: one actor per GPU, each loading the models once.

Ray's own primitives do the work: actors with ``num_gpus=1`` (``num_cpus=1`` on the CPU), each
holding the worker's Engine and its warm ModelCache, ``ray.wait`` on their results, and a
``ray.util.queue.Queue`` the actors push progress into (polling a busy actor for it could time
out: on a loaded machine a whole run's progress went missing that way). A job is
given to whichever actor is free, in spec order. An actor that is lost (its process killed, its
node gone) fails its job with RayActorError: the job goes back to the front of the queue, once,
and a new actor takes the dead one's place. Ray Data's ``map_batches`` would suit a batch with no
per-job progress, cancel or retry; ``ray.util.ActorPool`` hands a failed future's actor back to
its idle set without saying which job it held, so a retry could not be sent elsewhere. Plain
actors and ``ray.wait`` give all three.

The actors write into ``jobs_root`` themselves: on a cluster of several nodes it must be a folder
every node sees (a shared file system). The driver ships this package to the cluster with
``runtime_env={"py_modules": ...}``, so the nodes need the worker's libraries, not this code.
"""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.queue import Queue

from ..core import jobkey
from ..core.errors import INTERNAL_ERROR, ShapEError, cancelled
from ..core.protocol import GenerateRequest, Progress
from ..worker.engine import Engine
from .jobs import Job
from .local import MAX_TRIES, OnDone, OnProgress

PACKAGE_DIR = Path(__file__).resolve().parents[1]


@ray.remote(max_concurrency=2)  # one thread runs a job, the other takes cancel and pid calls
class ShapEActor:
    def __init__(self, jobs_root: str, progress: Queue) -> None:
        self.engine = Engine(Path(jobs_root))
        self.progress = progress
        self.cancelled: set[int] = set()

    def pid(self) -> int:
        return os.getpid()

    def generate(self, request: dict[str, Any], job_id: int) -> dict[str, Any]:
        """Run one job; its result (files in its job folder) or its error, as JSON. Progress
        is pushed to the driver's queue as it happens (fire and forget: a job never waits on
        it), so a busy actor cannot starve a poll of it."""

        def emit(p: Progress) -> None:
            self.progress.actor.put_nowait.remote((job_id, p.to_json()))

        try:
            result = self.engine.generate(
                GenerateRequest.from_json(request),
                request_id=job_id,
                emit=emit,
                cancel=lambda: job_id in self.cancelled,
            )
        except ShapEError as err:
            return {"error": err.to_json()}
        return {"result": result.to_dict(inline=False)}

    def cancel(self, job_id: int) -> None:
        self.cancelled.add(job_id)


def run_ray(
    jobs: Sequence[Job],
    jobs_root: Path,
    address: str,
    *,
    device: str | None = None,
    actors: int | None = None,
    on_progress: OnProgress | None = None,
    on_done: OnDone | None = None,
    allow_download: bool = False,
) -> None:
    """Connect to the cluster at ``address`` ("auto": the one this machine belongs to) and run
    every job that is not reused; ``actors`` defaults to one per GPU (per CPU with --device
    cpu), never more than there are jobs."""
    if all(j.reused for j in jobs):
        return  # nothing to generate: no cluster is needed
    try:
        _reachable(address)
        ray.init(
            address=address, runtime_env={"py_modules": [str(PACKAGE_DIR)]}, log_to_driver=False
        )
    except (OSError, RuntimeError, ValueError) as exc:  # ConnectionError is an OSError
        raise ShapEError(
            INTERNAL_ERROR,
            f"could not connect to the Ray cluster at {address}: {exc}",
            "start it first (ray start --head), or pass the address `ray start` printed",
            "ray",
        ) from None
    try:
        Pool(jobs_root, device, actors, allow_download).run(jobs, on_progress, on_done)
    finally:
        ray.shutdown()


def _reachable(address: str, timeout: float = 10.0) -> None:
    """Raise OSError when nothing listens at host:port: ray.init would retry for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout):
            pass


class Pool:
    """The actors, and the queue of jobs in front of them (the connection is the caller's)."""

    def __init__(
        self, jobs_root: Path, device: str | None, count: int | None, allow_download: bool
    ) -> None:
        self.jobs_root = jobs_root
        self.device = device or "cuda"
        self.gpu = self.device != "cpu"
        resources = ray.cluster_resources()
        self.count = count or int(resources.get("GPU" if self.gpu else "CPU", 0))
        if self.count < 1:
            raise ShapEError(
                INTERNAL_ERROR,
                "the Ray cluster has no GPU" if self.gpu else "the Ray cluster has no CPU",
                "add GPU nodes, or pass --device cpu to run on the CPUs",
                "ray",
            )
        self.allow_download = allow_download
        self.actors: list[Any] = []
        self.progress: Queue | None = None

    def _actor(self) -> Any:
        options = {"num_gpus": 1} if self.gpu else {"num_cpus": 1}
        return ShapEActor.options(**options).remote(str(self.jobs_root), self.progress)  # type: ignore[attr-defined]

    def run(
        self, jobs: Sequence[Job], on_progress: OnProgress | None, on_done: OnDone | None
    ) -> None:
        queue = collections.deque(j for j in jobs if not j.reused)
        self.progress = Queue(actor_options={"num_cpus": 0})
        self.actors = [self._actor() for _ in range(min(self.count, len(queue)))]
        idle = list(range(len(self.actors)))
        running: dict[Any, tuple[Job, int]] = {}
        try:
            while queue or running:
                while idle and queue:
                    i, job = idle.pop(0), queue.popleft()
                    running[self._send(i, job)] = (job, i)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                if on_progress is not None:
                    self._progress(running, on_progress)
                for ref in ready:
                    job, i = running.pop(ref)
                    idle.append(i)
                    if self._finish(ref, job, i) and job.tries < MAX_TRIES:
                        queue.appendleft(job)
                    elif on_done is not None:
                        on_done(job)
        except KeyboardInterrupt:
            for job, i in running.values():
                self.actors[i].cancel.remote(job.obj.index)
                job.error = cancelled()
            raise
        finally:
            for actor in self.actors:
                ray.kill(actor)  # frees its GPU at once
            self.progress.shutdown()

    def _send(self, i: int, job: Job) -> Any:
        if job.folder is None:
            job.folder = jobkey.new_keyed_dir(self.jobs_root, job.key, job.obj.name)
        job.tries += 1
        job.where = f"actor {i} ({self.device if self.gpu else 'cpu'})"
        # Ray gives each GPU actor its own GPU as the only one it sees: "cuda" is that one.
        params = replace(job.obj.params, device="cuda" if self.gpu else "cpu")
        request = GenerateRequest(
            params, job_dir=str(job.folder), allow_download=self.allow_download
        )
        return self.actors[i].generate.remote(request.to_json(), job.obj.index)

    def _finish(self, ref: Any, job: Job, i: int) -> bool:
        """Set the job's outcome; True when its actor was lost (the job may be sent again)."""
        try:
            out = ray.get(ref)
        except RayActorError:
            self.actors[i] = self._actor()  # the lost one's place
            job.error = ShapEError(
                INTERNAL_ERROR, f"{job.where} was lost while it ran the job", "it is retried once"
            )
            return True
        except RayTaskError as exc:
            job.error = ShapEError(
                INTERNAL_ERROR, f"{job.where} failed: {exc.cause!r}", "see the job's job.log"
            )
            return False
        job.error = ShapEError.from_json(out["error"]) if "error" in out else None
        return False

    def _progress(self, running: dict[Any, tuple[Job, int]], on_progress: OnProgress) -> None:
        """Hand on what the actors pushed since the last call (for jobs still running)."""
        assert self.progress is not None
        by_id = {job.obj.index: job for job, _ in running.values()}
        for job_id, progress in self.progress.get_nowait_batch(self.progress.qsize()):
            if job_id in by_id:
                on_progress(by_id[job_id], Progress.from_json(progress))
