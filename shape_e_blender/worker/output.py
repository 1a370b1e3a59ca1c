"""The worker's protocol output: messages on the real stdout, and nothing else there.

At start the real stdout is kept for protocol messages and file descriptor 1 is pointed at
stderr (take_over_stdout), so stray prints from libraries (progress bars, warnings, C extensions)
cannot corrupt a message. Output writes the messages, from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from ..core import protocol

log = logging.getLogger("shape_e_blender.worker")


class Output:
    """Thread-safe writer of protocol messages."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream: BinaryIO | None = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = protocol.encode(message).encode("utf-8")
        with self._lock:
            if self._stream is None:  # detached: nobody reads any more
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):  # BrokenPipeError; EINVAL on Windows
                # The client went away; the jobs still finish and their files stay on disk.
                log.warning("client closed the output pipe; dropping a message")

    def detach(self, log_path: Path) -> None:
        """Stop writing to the client, which is going away (Blender quits mid-job): the protocol
        stream is closed and stderr (fd 2, and fd 1 that points at it) goes to ``log_path``, so
        that no pipe end of the client's stays open here and its readers end at once. The jobs
        go on and their answers are dropped: their results are in their job folders."""
        with self._lock:
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()
            self._stream = None
        sys.stderr.flush()
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        os.close(fd)
        log.info("detached from the client; finishing the jobs (their results go to their folders)")

    def progress(self, p: protocol.Progress) -> None:
        self.send(protocol.notification("progress", p.to_json()))


def take_over_stdout() -> BinaryIO:
    """Keep the real stdout for protocol messages; point fd 1 (stray prints) at stderr."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return proto
