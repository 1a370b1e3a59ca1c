"""The worker's log lines: their format, and each job's own copy in its folder (job.log)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from ..core import jobdir

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ThreadFilter(logging.Filter):
    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread_id


@contextlib.contextmanager
def job_log(job_dir: Path) -> Iterator[logging.Logger]:
    """Copy this thread's log records into the job's log file while the job runs."""
    handler = logging.FileHandler(job_dir / jobdir.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield logging.getLogger("shape_e_blender.job")
    finally:
        root.removeHandler(handler)
        handler.close()
