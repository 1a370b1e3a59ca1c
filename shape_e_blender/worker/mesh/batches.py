"""Batched field evaluation for one mesh extraction, with its cancellation and progress."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...core.errors import INTERNAL_ERROR, ShapEError, cancelled
from ...core.protocol import DECODE_STEPS

Field = Callable[[torch.Tensor], torch.Tensor]
# The signed distance at grid points named by their (N, 3) integer indices into the fine grid.
GridField = Callable[[torch.Tensor], torch.Tensor]

PROGRESS_TOTAL = DECODE_STEPS  # progress(done, total) counts thousandths of the extraction


class Batches:
    """Batching, cancellation and progress for one extraction.

    Progress runs over fixed stages: each ``start_stage(end)`` spans from the current position to
    ``end`` (a fraction of the whole), and batches advance within it.
    """

    def __init__(
        self,
        device: torch.device,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> None:
        self.device = device
        self.batch_size = batch_size
        self._progress = progress
        self._should_cancel = should_cancel
        self._done = 0
        self._lo = self._hi = 0.0
        self.check()
        if progress is not None:
            progress(0, PROGRESS_TOTAL)

    def check(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise cancelled()

    def start_stage(self, end: float) -> None:
        self._lo, self._hi = self._hi, end

    def advance(self, fraction: float) -> None:
        """Report that ``fraction`` of the current stage is done, and poll for cancellation."""
        self.check()
        done = min(int(PROGRESS_TOTAL * (self._lo + (self._hi - self._lo) * fraction)), 999)
        if self._progress is not None and done > self._done:
            self._done = done
            self._progress(done, PROGRESS_TOTAL)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress(PROGRESS_TOTAL, PROGRESS_TOTAL)

    def evaluate(
        self,
        fn: Field,
        count: int,
        points: Callable[[int, int], torch.Tensor],
        width: int,
        name: str,
    ) -> torch.Tensor:
        """Call ``fn`` on ``points(start, stop)`` in batches; returns (count, width) float32."""
        out = torch.empty((count, width), dtype=torch.float32, device=self.device)
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            with torch.inference_mode():
                value = fn(points(start, stop))
            if not isinstance(value, torch.Tensor) or value.numel() != (stop - start) * width:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ShapEError(
                    INTERNAL_ERROR,
                    f"the {name} field returned {shape} for {stop - start} points",
                    f"the {name} callable must return {width} value(s) per point",
                )
            out[start:stop] = value.reshape(stop - start, width).to(self.device, torch.float32)
            self.advance(stop / count)
        return out
