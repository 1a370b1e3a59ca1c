"""One hub file into the Hugging Face cache, resumable across processes.

huggingface_hub 2.4's ``hf_hub_download`` resumes a broken transfer only inside one call: its
partial file (``blobs/<etag>.<random>.incomplete``) belongs to that call and is deleted when the
call fails, so a download that was cancelled, or whose process was killed, starts again from byte
zero. ``fetch`` keeps the bytes instead:

- What has arrived is kept in ``blobs/<etag>.incomplete``. The name carries the file's etag (its
  sha256 for LFS files), so bytes of a file that has since changed on the hub are never continued
  (the new version has another etag, hence another partial file), and huggingface_hub's cache
  tools (``hf cache ls``, ``hf cache prune``) list and remove it as an incomplete download.
- Each request asks for the rest with ``Range: bytes=<bytes on disk>-``. A server that ignores
  the range (200) or refuses it (416) gets the file sent whole again: correct, only not resumed.
  Inside one call, a cut connection is resumed the same way, one second later; it gives up after
  five retries in a row that bring no new byte, as huggingface_hub does.
- Bytes are written in chunks of ``CHUNK_BYTES`` and reported after each one; a cancel (the report
  callback raising) or a killed process leaves everything written so far for the next run.
- Once complete, the size is checked and, for LFS files (an etag of 64 hex digits), the sha256.
  A mismatch after resuming means the earlier bytes were bad (a partial file left by a crash that
  lost data, or written by something else): they are dropped and the file is fetched once more
  from byte zero. A mismatch of freshly fetched bytes is an error, and the partial is deleted.
- The checked file is renamed to ``blobs/<etag>``; ``hf_hub_download`` at the same commit then
  finds it and only adds the snapshot link. Where the cache folder cannot hold symlinks (Windows
  without Developer Mode, or HF_HUB_DISABLE_SYMLINKS), huggingface_hub keeps the file itself in
  the snapshot folder and no blob; the file is moved there in the same way, not copied.
- While it writes, ``fetch`` holds huggingface_hub's own lock for that blob
  (``.locks/<repo folder>/<etag>.lock``), so two processes, ours or huggingface_hub's, never write
  one file at once. A process that finds the lock taken waits, reporting the partial file's size
  (the other process's progress) once a second, and a cancel stops the wait.

Requests use huggingface_hub's HTTP client and headers (``http_stream_backoff`` on its shared
session, ``build_hf_headers``, ``get_hf_file_metadata``), so HF_TOKEN, HF_ENDPOINT, proxies,
timeouts and the user agent behave as for ``hf_hub_download``. Each request goes to the file's
``resolve`` URL at the pinned commit, which the hub redirects to its storage; the client drops the
token when the redirect leaves the hub's host, and a fresh redirect per request means a resumed
download never uses an expired signed URL.

Xet: repos stored with Xet are still served as plain HTTP from the same ``resolve`` URL (the hub
redirects to its Xet bridge); it is the way huggingface_hub itself downloads when hf_xet is not
installed. The file then comes in one stream rather than hf_xet's parallel chunk transfer, the
price of resuming; should that server ignore ranges, the file starts over rather than resuming.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from filelock import Timeout
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import are_symlinks_supported, repo_folder_name
from huggingface_hub.utils import (
    WeakFileLock,
    build_hf_headers,
    hf_raise_for_status,
    http_stream_backoff,
)

try:  # the HTTP client huggingface_hub raises from: httpx2 in its 2.x, httpx in 1.x
    import httpx2 as _http
except ImportError:
    import httpx as _http

log = logging.getLogger(__name__)

# Report and cancel granularity, and at most what a cut connection loses: 1 MiB (huggingface_hub
# reads 10 MiB at a time).
CHUNK_BYTES = 1 << 20
PARTIAL_SUFFIX = ".incomplete"
RETRIES = 5  # retries in a row that bring no new byte before giving up, as in huggingface_hub
RETRY_WAIT_S = 1.0
LOCK_POLL_S = 1.0

HTTP_ERROR = _http.HTTPError  # the base of every error the HTTP client raises
# The client's errors that a new request may cure (huggingface_hub retries the same).
TRANSIENT_ERRORS = (_http.TimeoutException, _http.NetworkError, _http.RemoteProtocolError)

_HEX_ETAG = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # git sha1 or LFS sha256

Report = Callable[[int], None]  # bytes of this file on disk now; may raise to cancel


class DamagedDownload(OSError):
    """A finished file's size or sha256 differs from what the hub lists."""


def repo_storage(repo_id: str, cache_dir: str | Path | None) -> Path:
    """The cache's folder for a model repo, as huggingface_hub names it."""
    root = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    return root.expanduser().resolve() / repo_folder_name(repo_id=repo_id, repo_type="model")


def partial_path(storage: Path, etag: str) -> Path:
    """Where the bytes so far of the file with this etag are kept."""
    return storage / "blobs" / f"{etag}{PARTIAL_SUFFIX}"


def fetch(
    repo_id: str, filename: str, *, commit: str, cache_dir: str | Path | None, report: Report
) -> bool:
    """Put ``filename`` of ``repo_id`` at ``commit`` into the cache, resuming an earlier partial.

    Returns False, having written nothing, when the hub's etag for the file cannot name a file
    here (not a hex digest) or its size is unknown: ``hf_hub_download`` then fetches it its own
    way. Raises DamagedDownload when the bytes are wrong, huggingface_hub's and the HTTP client's
    errors when the hub fails, and whatever ``report`` raises (a cancel).
    """
    url = hf_hub_url(repo_id, filename, revision=commit)
    meta = get_hf_file_metadata(url, retry_on_errors=True)
    etag, size = meta.etag or "", meta.size
    if not _HEX_ETAG.fullmatch(etag) or size is None:
        log.info("%s: etag %r, size %s: left to huggingface_hub", filename, etag, size)
        return False
    storage = repo_storage(repo_id, cache_dir)
    blob = storage / "blobs" / etag
    # Without symlinks huggingface_hub keeps the file here and no blob.
    snapshot_file = storage / "snapshots" / (meta.commit_hash or commit) / filename
    blob.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(storage, etag)
    with _locked(storage.parent / ".locks" / storage.name / f"{etag}.lock", part, report):
        if not (blob.is_file() or snapshot_file.is_file()):  # else another process finished it
            _fetch_locked(url, part, etag, size, filename, report)
            _place(part, blob, snapshot_file, storage)
    report(size)
    return True


def _fetch_locked(
    url: str, path: Path, etag: str, size: int, filename: str, report: Report
) -> None:
    part = _Partial(path, size, report, filename)
    part.fill(url)
    problem = part.problem(etag)
    if problem and part.kept:
        log.warning(
            "%s: %s after resuming an earlier download: fetching it again from the start",
            filename,
            problem,
        )
        part.cut(0)
        part.fill(url)
        problem = part.problem(etag)
    if problem:
        path.unlink(missing_ok=True)
        raise DamagedDownload(
            f"the bytes received are not the hub's file ({problem}); the partial file is deleted"
        )


def _place(part: Path, blob: Path, snapshot_file: Path, storage: Path) -> None:
    if are_symlinks_supported(storage):
        part.replace(blob)
    else:
        # huggingface_hub moves a new blob into the snapshot too; hf_hub_download would copy it.
        snapshot_file.parent.mkdir(parents=True, exist_ok=True)
        part.replace(snapshot_file)


@contextmanager
def _locked(lock_path: Path, part: Path, report: Report) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        waiting = False
        while True:
            try:
                stack.enter_context(WeakFileLock(lock_path, timeout=LOCK_POLL_S))
                break
            except Timeout:
                if not waiting:
                    log.info("%s: another process is downloading it; waiting", part.name)
                    waiting = True
                report(part.stat().st_size if part.is_file() else 0)  # its progress; may cancel
        yield


class _Partial:
    """The bytes so far of a file of ``size`` bytes, kept at ``path`` across processes."""

    def __init__(self, path: Path, size: int, report: Report, filename: str) -> None:
        self.path, self.size, self.report, self.filename = path, size, report, filename
        self.have = path.stat().st_size if path.is_file() else 0
        self.kept = self.have > 0  # holds bytes that an earlier run wrote
        self.received = 0  # bytes that arrived in this run
        if self.have > size:
            log.warning(
                "%s: %d bytes kept, more than its %d: starting over", filename, self.have, size
            )
            self.cut(0)
        elif self.have:
            log.info("%s: resuming at byte %d of %d", filename, self.have, size)
        report(self.have)

    def cut(self, at: int) -> None:
        """Keep only the first ``at`` bytes."""
        with self.path.open("r+b" if self.path.is_file() else "wb") as f:
            f.truncate(at)
        self.have = at
        self.kept = self.kept and at > 0
        self.report(at)

    def fill(self, url: str) -> None:
        """Request the missing bytes until the file is complete, resuming after a cut connection."""
        idle = 0  # requests in a row that brought no byte
        while self.have < self.size:
            before = self.received
            error: Exception | None = None
            try:
                self._request(url)
            except TRANSIENT_ERRORS as exc:
                error = exc
            idle = 0 if self.received > before else idle + 1
            if idle > RETRIES:
                if error is not None:
                    raise error
                raise OSError(f"the hub stopped sending {self.filename} at byte {self.have}")
            if self.have < self.size and (error is not None or idle):
                why = f"{type(error).__name__}: {error}" if error is not None else "no data"
                log.warning(
                    "%s: %s at byte %d of %d; resuming", self.filename, why, self.have, self.size
                )
                time.sleep(RETRY_WAIT_S)  # give the network a moment, as huggingface_hub does

    def _request(self, url: str) -> None:
        """One GET for the missing bytes, appending what arrives."""
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"  # ranges of the file itself, not of a gzip of it
        if self.have:
            headers["Range"] = f"bytes={self.have}-"
        # Connection errors are retried by fill(), from the bytes that did arrive.
        with http_stream_backoff(
            "GET",
            url,
            headers=headers,
            timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
            retry_on_exceptions=(),
            retry_on_status_codes=(408, 429),
        ) as response:
            if not (response.status_code == 416 and self.have):
                return self._receive(response)
        log.warning("%s: the server refused a range request: asking for all of it", self.filename)
        self.cut(0)
        return self._request(url)

    def _receive(self, response: Any) -> None:
        hf_raise_for_status(response)
        start = _range_start(response) if response.status_code == 206 else 0
        if start > self.have:
            raise OSError(f"asked for {self.filename} from byte {self.have}, got it from {start}")
        if start < self.have:  # a 200: the server ignored the range
            log.info("%s: the server sent it from byte %d, not %d", self.filename, start, self.have)
            self.cut(start)
        with self.path.open("ab") as f:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                f.write(chunk)
                f.flush()  # in the file before it is reported: a killed process keeps it
                self.have += len(chunk)
                self.received += len(chunk)
                self.report(self.have)

    def problem(self, etag: str) -> str | None:
        """What is wrong with the complete file, or None."""
        size = self.path.stat().st_size if self.path.is_file() else 0
        if size != self.size:
            return f"{size} bytes instead of {self.size}"
        if len(etag) == 64:  # an LFS file: the etag is its sha256
            with self.path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if digest != etag.lower():
                return f"sha256 {digest[:12]}…, the hub lists {etag[:12]}…"
        return None


def _range_start(response: Any) -> int:
    match = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", response.headers.get("Content-Range", ""))
    if match is None:
        raise OSError(
            f"the hub answered 206 with Content-Range {response.headers.get('Content-Range')!r}"
        )
    return int(match.group(1))
