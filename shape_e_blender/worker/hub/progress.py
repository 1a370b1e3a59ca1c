"""Byte progress over a whole download: one count that never goes backwards.

Fed by ``fetch`` (bytes on disk per file) and by huggingface_hub's own transfers, through a
silent tqdm class handed to ``hf_hub_download``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from tqdm.auto import tqdm

Progress = Callable[[int, int], None]  # (done bytes, total bytes); may raise to cancel


class ByteCounter:
    """One monotonic (done, total) over the whole download: bytes on disk, file by file.

    It starts from what the plan found on disk (cached files, partial ones). A file that starts
    over (a damaged partial, a server that ignored a range) lowers its own count; the total
    reported then waits until the bytes are back, so it never goes backwards.
    """

    def __init__(
        self,
        files: Iterable[tuple[str, int]],
        on_disk: Iterable[tuple[str, int]],
        callback: Progress | None,
    ) -> None:
        self.sizes = dict(files)  # path in the repo -> bytes
        self.total = sum(self.sizes.values())
        self.callback = callback
        self.done = {name: min(n, self.sizes[name]) for name, n in on_disk}
        self.name = ""
        self.reported = -1
        self.lock = threading.Lock()  # a Xet transfer may report from its own threads
        self.bar_class = _bar_class(self)
        self._emit()

    def start_file(self, name: str) -> None:
        self.name = name

    def set_file(self, n: int) -> None:
        """The current file has ``n`` bytes on disk now (called per chunk: a cancel point)."""
        with self.lock:
            self.done[self.name] = min(max(n, 0), self.sizes[self.name])
            self._emit(force=True)

    def add(self, n: int) -> None:
        # A retry that restarts a file reports negative updates: clamp, never go backwards.
        with self.lock:
            self.done[self.name] = min(
                max(self.done.get(self.name, 0) + n, 0), self.sizes[self.name]
            )
            self._emit()

    def finish_file(self) -> None:
        with self.lock:
            self.done[self.name] = self.sizes[self.name]
            self._emit()

    def _emit(self, force: bool = False) -> None:
        """Report a new high; with ``force``, also repeat the last one, so a cancel is seen."""
        done = sum(self.done.values())
        if done > self.reported or (force and self.reported >= 0):
            self.reported = max(done, self.reported)
            if self.callback is not None:
                self.callback(self.reported, self.total)


def _bar_class(counter: ByteCounter) -> type:
    """A silent tqdm whose byte updates go to ``counter``: the tqdm_class hook of hf_hub_download.

    It defines update_transfer so that a Xet download reports through this one bar as well.
    """

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            kwargs.pop("name", None)
            super().__init__(*args, **kwargs)
            if kwargs.get("initial"):
                counter.add(int(kwargs["initial"]))

        def update(self, n: float | None = 1) -> bool | None:
            counter.add(int(n or 0))
            return None

        def update_transfer(self, n: float | None = 1) -> None:
            """Network bytes of a Xet transfer; the bytes written arrive through update()."""

    return _Bar
