"""A job's progress and timings: the stages it reports (with an ETA) and the seconds each took."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import protocol
from ..core.errors import cancelled

log = logging.getLogger("shape_e_blender.engine")

Emit = Callable[[protocol.Progress], None]


@dataclass
class StageClock:
    """Turns (stage, step, total) events into progress notifications with an ETA.

    The ETA is the mean time per finished step in the current stage times the steps left; a
    stage's clock starts when the previous stage's last event arrived.
    """

    request_id: protocol.Id
    emit: Emit
    stage: str = ""
    started: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)
    firsts: dict[str, float] = field(default_factory=dict)  # when each stage began

    def __call__(self, stage: str, step: int, total: int, variant: int | None = None) -> None:
        now = time.perf_counter()
        if stage != self.stage:
            if self.stage:
                log.info("%s done in %.2f s", self.stage, self.last - self.started)
            log.info("%s: %d steps", stage, total)
            # Decoding and writing take turns, a variant at a time: a stage's clock runs from its
            # first event, so the ETA counts the other stage's share too.
            self.stage, self.started = stage, self.firsts.setdefault(stage, self.last)
        eta = None
        if 0 < step < total:
            eta = (now - self.started) / step * (total - step)
        elif step >= total:
            eta = 0.0
        self.last = now
        self.emit(protocol.Progress(self.request_id, stage, step, total, eta, variant))


@dataclass
class Timings:
    values: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.values[name] = round(self.values.get(name, 0.0) + seconds, 4)


def download_progress(
    clock: StageClock, should_cancel: Callable[[], bool]
) -> Callable[[int, int], None]:
    """Byte progress for a download that also stops it (between chunks) on cancel."""

    def progress(done: int, total: int) -> None:
        if should_cancel():
            raise cancelled()
        clock("downloading", done, total)

    return progress
