"""What the panel and the preferences show about the current or last task (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..client.envsetup import STAGE_TEXT
from ..core.protocol import count_text, duration_text

STAGE_LABELS = {
    "starting": "Starting worker",
    "queued": "Queued",
    "downloading": "Downloading",
    "loading": "Loading model",
    "encoding": "Encoding",
    "sampling": "Sampling",
    "decoding": "Extracting mesh",
    "texturing": "Baking texture",
    "writing": "Writing",
    **STAGE_TEXT,  # the environment setup's stages
}


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

    @property
    def fraction(self) -> float:
        if self.fraction_override is not None:
            return self.fraction_override
        own = min(1.0, self.step / self.total) if self.total > 0 else 0.0
        if self.parts:  # a scene build: the whole build's share
            return (self.part - 1 + own) / self.parts
        return own

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
