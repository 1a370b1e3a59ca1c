"""Which objects of a spec need generating, and what became of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import jobkey
from ..core.errors import ShapEError
from ..core.spec import SceneSpec, SpecObject


@dataclass
class Job:
    """One spec object: reused from a finished folder, or generated into a new one."""

    obj: SpecObject
    key: jobkey.JobKey
    folder: Path | None = None  # the finished folder (reused), or the one being written
    reused: bool = False
    error: ShapEError | None = None
    tries: int = 0  # times it was sent (a job whose worker died is sent again, once)
    where: str = ""  # the worker or actor that made it

    @property
    def ok(self) -> bool:
        return self.folder is not None and self.error is None


def plan(spec: SceneSpec, jobs_root: Path) -> list[Job]:
    """A Job per object; those with a finished folder for their key are marked reused."""
    out = []
    for o in spec.objects:
        key = jobkey.job_key(o.params)
        done = jobkey.find_done(jobs_root, key.key, o.params.device, o.params.precision)
        out.append(Job(o, key, done, reused=done is not None))
    return out
