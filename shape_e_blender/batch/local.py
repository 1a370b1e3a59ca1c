"""N local worker subprocesses (one per GPU), each warm, each taking the next job of a spec.

Each worker is an ordinary WorkerClient (client/): the same protocol, process handling and job
folders as the add-on's one worker. A worker that dies takes its job back to the queue once; the
client starts a new worker process for the next job sent to it. This is a queue in front of N
subprocesses, not a cluster scheduler: for a cluster, --ray hands the jobs to Ray.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..client.client import WorkerClient
from ..client.handle import JobHandle
from ..core import jobkey
from ..core.errors import WORKER_EXITED, ShapEError
from ..core.protocol import GenerateRequest, Progress
from .jobs import Job

MAX_TRIES = 2  # a job whose worker died is sent once more, to any free worker
OnProgress = Callable[[Job, Progress], None]
OnDone = Callable[[Job], None]


def devices_for(workers: int, device: str | None) -> list[str]:
    """One device per worker: the one given for all of them, else cuda:0 .. cuda:N-1."""
    return [device or f"cuda:{i}" for i in range(workers)]


def run_local(
    jobs: Sequence[Job],
    devices: Sequence[str],
    jobs_root: Path,
    *,
    python: str | os.PathLike[str],
    on_progress: OnProgress | None = None,
    on_done: OnDone | None = None,
    allow_download: bool = False,
    clients: Sequence[WorkerClient] | None = None,
) -> None:
    """Generate every job that is not reused, one worker per device; sets each job's outcome.

    ``clients`` (one per device) are made here unless given; they are shut down at the end.
    """
    clients = (
        list(clients) if clients is not None else [WorkerClient(python, jobs_root) for _ in devices]
    )
    queue = collections.deque(j for j in jobs if not j.reused)
    running: dict[int, tuple[Job, JobHandle]] = {}
    try:
        while queue or running:
            for i, client in enumerate(clients):
                if i not in running and queue:
                    job = queue.popleft()
                    job.where = f"worker {i} ({devices[i]})"
                    try:
                        running[i] = (
                            job,
                            _send(client, job, devices[i], jobs_root, allow_download),
                        )
                    except ShapEError as err:  # the worker could not be started
                        job.error = err
                        if on_done:
                            on_done(job)
            for i, (job, handle) in list(running.items()):
                for ev in clients[i].poll(0.05):
                    if ev.job is handle and ev.progress is not None and on_progress:
                        on_progress(job, ev.progress)
                if not handle.done:
                    continue
                del running[i]
                died = handle.error is not None and handle.error.code == WORKER_EXITED
                if died and job.tries < MAX_TRIES:
                    queue.appendleft(job)  # the next free worker takes it
                    continue
                job.error = handle.error
                if on_done:
                    on_done(job)
    except KeyboardInterrupt:
        for i, (_job, handle) in running.items():
            clients[i].cancel(handle)
        raise
    finally:
        for client in clients:
            client.shutdown(wait=True)


def _send(
    client: WorkerClient, job: Job, device: str, jobs_root: Path, allow_download: bool
) -> JobHandle:
    if job.folder is None:  # a retry writes into the folder it was given first
        job.folder = jobkey.new_keyed_dir(jobs_root, job.key, job.obj.name)
    job.tries += 1
    params = replace(job.obj.params, device=device)
    return client.generate(
        GenerateRequest(params, job_dir=str(job.folder), allow_download=allow_download)
    )
