"""What the panel and the preferences show about the current or last task (plain data)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..client.envsetup import STAGE_TEXT
from ..core.protocol import TIMING_LABELS, Progress, count_text, duration_text

STAGE_LABELS = {
    "starting": "Starting the worker",
    "queued": "Queued",
    "downloading": "Downloading",
    "loading": "Loading models",
    "encoding": "Encoding",
    "sampling": "Sampling",
    "decoding": "Extracting mesh",
    "texturing": "Baking texture",
    "writing": "Writing",
    **STAGE_TEXT,  # the environment setup's stages
}


def timings_of(results: Iterable[Any]) -> dict[str, float]:
    """The seconds per stage of a task's answers, summed over them (a scene build's many)."""
    total: dict[str, float] = {}
    for result in results:
        timings = result.get("timings") if isinstance(result, dict) else None
        for name, seconds in (timings if isinstance(timings, dict) else {}).items():
            if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
                total[name] = total.get(name, 0.0) + float(seconds)
    return total


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else duration_text(seconds)


@dataclass
class Status:
    """What the panel and the preferences show about the current or last task."""

    state: str = "idle"  # idle | running | cancelling | done | cancelled | error
    kind: str = ""  # generate | download | check | setup
    label: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    started: float = 0.0
    message: str = ""  # done: what was made; running: the last line of output (setup)
    error: str = ""
    hint: str = ""
    error_field: str = ""
    objects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a task that succeeded in part
    fraction_override: float | None = None  # a task that measures its own progress (setup)
    # A scene build: object ``part`` of ``parts`` (1-based) runs; the time left for them all.
    part: int = 0
    parts: int = 0
    part_label: str = ""
    part_started: float = 0.0
    overall_eta_s: float | None = None
    timings: dict[str, float] = field(default_factory=dict)  # a finished task's (timings_of)

    @property
    def fraction(self) -> float:
        if self.fraction_override is not None:
            return self.fraction_override
        own = min(1.0, self.step / self.total) if self.total > 0 else 0.0
        if self.parts:  # a scene build: the whole build's share
            return (self.part - 1 + own) / self.parts
        return own

    def show(self, p: Progress) -> None:
        self.stage, self.step, self.total, self.eta_s = p.stage, p.step, p.total, p.eta_s

    def timings_text(self) -> str:
        """Where a finished task's time went, e.g. "9.1 s: imports 3.8 s, sampling 4.2 s, ..."."""
        shown = [(n, s) for n, s in self.timings.items() if s >= 0.05]
        if not shown:
            return ""
        order = list(TIMING_LABELS)
        shown.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
        parts = [f"{TIMING_LABELS.get(n, n)} {_seconds(s)}" for n, s in shown]
        return f"{_seconds(sum(self.timings.values()))}: {', '.join(parts)}"

    def progress_text(self) -> str:
        name = STAGE_LABELS.get(self.stage, self.stage.capitalize() or "Working")
        if self.state == "cancelling":
            return f"Cancelling ({name})"
        if self.stage == "queued":
            count = f" ({self.total} ahead)" if self.total else ""
        else:
            count = count_text(self.stage, self.step, self.total)
            count = f" {count}" if count else ""
        if self.parts:
            eta = f", {duration_text(self.overall_eta_s)} left in all" if self.overall_eta_s else ""
            return f"{self.part}/{self.parts} {self.part_label}: {name}{count}{eta}"
        eta = f", {duration_text(self.eta_s)} left" if self.eta_s else ""
        return f"{name}{count}{eta}"
