"""What a client holds for one request it sent: its progress, and then its answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.errors import ShapEError
from ..core.protocol import Progress

EventKind = Literal["progress", "result", "error"]


@dataclass(eq=False)  # compared by identity: two requests are never the same job
class JobHandle:
    """One request and what came back for it. Changed only by WorkerClient.poll()."""

    id: int
    method: str
    params: dict[str, Any]
    generation: int  # which worker process it was sent to
    progress: Progress | None = None
    result: Any = None
    error: ShapEError | None = None
    done: bool = False
    local_dir: str | None = None  # a remote worker's job: the local folder its result goes to
    sent_at: float = field(default_factory=time.monotonic)  # the silence watchdog's start

    @property
    def job_dir(self) -> str | None:
        """The job folder a generate request named, if any."""
        folder = self.local_dir or self.params.get("job_dir")
        return folder if isinstance(folder, str) and folder else None

    def raise_for_error(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True)
class Event:
    kind: EventKind
    job: JobHandle
    progress: Progress | None = None
