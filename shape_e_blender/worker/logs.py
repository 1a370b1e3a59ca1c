"""The worker's log lines: their format, and each job's own copy in its folder (job.log)."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from ..core import jobdir
from ..core.errors import JOB_FAILED, ShapEError
from ..core.files import claimed, writing

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ThreadFilter(logging.Filter):
    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread_id


class _JobLogHandler(logging.FileHandler):
    """The job's log file. One that cannot be written (a full disk) is given up after one line on
    stderr, where the same records go anyway; logging's default prints a traceback per record."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"the job log {self.baseFilename} cannot be written ({error})\n")


@contextlib.contextmanager
def job_log(job_dir: Path) -> Iterator[logging.Logger]:
    """Copy this thread's log records into the job's log file while the job runs, and hold the
    folder meanwhile (files.writing): a reader that finds it without a result then keeps its
    ``.part`` files, which are being written, not left by a worker that was killed.

    The job has the folder to itself (files.claimed, on its log): a folder another job is
    running in is refused, before anything in it is touched."""
    with writing(job_dir), _claim(job_dir), _copied(job_dir / jobdir.LOG_FILE) as job_logger:
        yield job_logger


@contextlib.contextmanager
def _claim(job_dir: Path) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(claimed(job_dir / jobdir.LOG_FILE))
        except BlockingIOError:
            raise ShapEError(
                JOB_FAILED,
                f"job_dir: {job_dir} is the folder of another job that is running now",
                "give each job its own folder (leave job_dir out for a new one), or wait for "
                "that job to end",
                "job_dir",
            ) from None
        yield


@contextlib.contextmanager
def _copied(log_file: Path) -> Iterator[logging.Logger]:
    job_logger = logging.getLogger("shape_e_blender.job")
    try:
        handler = _JobLogHandler(log_file, encoding="utf-8")
    except OSError as exc:  # the job still runs; its records still reach stderr
        job_logger.warning("the job log %s cannot be opened: %s", log_file, exc)
        yield job_logger
        return
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield job_logger
    finally:
        root.removeHandler(handler)
        with contextlib.suppress(OSError):  # the last flush can fail like any write
            handler.close()
