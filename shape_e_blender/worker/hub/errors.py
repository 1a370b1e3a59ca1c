"""What the hub's failures become: one readable MODEL_UNAVAILABLE error with a way out.

The hints name the CLI's download command for the repo, the cache folder, and how to use a copy
of the weights made on another machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import constants, is_offline_mode
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ...core.errors import MODEL_UNAVAILABLE, ShapEError
from ...core.params import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL
from .fetch import HTTP_ERROR, DamagedDownload

log = logging.getLogger(__name__)


def unusable(source: str, what: str, hint: str) -> ShapEError:
    """``source`` (a repo id or a folder) has no usable model for the request."""
    return ShapEError(MODEL_UNAVAILABLE, f"{source} cannot be used: {what}", hint, "model")


def where(cache_dir: str | Path | None) -> str:
    """The model cache in use, for messages: " (<folder>)"."""
    if cache_dir is not None:
        return f" ({cache_dir})"
    return f" ({constants.HF_HUB_CACHE})"


def download_command(repo_id: str, kind: str) -> str:
    """The CLI command that downloads ``repo_id`` for ``kind``."""
    cmd = "python -m shape_e_blender download"
    if repo_id == DEFAULT_TEXT_MODEL and kind != "image":
        return cmd
    if repo_id == DEFAULT_IMAGE_MODEL:
        return f"{cmd} --image"
    return f"{cmd} --model {repo_id}" + (" --image" if kind == "image" else "")


def local_hint(repo_id: str) -> str:
    return (
        f"or copy {repo_id} from another machine and pass its folder with --model /path/to/folder"
    )


def refuse_offline(repo_id: str, kind: str) -> None:
    if is_offline_mode():
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"cannot download {repo_id}: offline mode is on (HF_HUB_OFFLINE)",
            f"unset HF_HUB_OFFLINE and run `{download_command(repo_id, kind)}`, "
            + local_hint(repo_id),
            "model",
        )


def hub_error(exc: BaseException, repo_id: str, kind: str, action: str) -> ShapEError:
    """Turn whatever huggingface_hub raised into one readable MODEL_UNAVAILABLE error."""
    if isinstance(exc, ShapEError):
        return exc
    endpoint = constants.ENDPOINT
    retry = (
        f"run `{download_command(repo_id, kind)}` again: finished files are kept and a cut-off "
        "file resumes where it stopped"
    )
    if isinstance(exc, OfflineModeIsEnabled):
        msg, hint = (
            "offline mode is on (HF_HUB_OFFLINE)",
            f"unset HF_HUB_OFFLINE, {local_hint(repo_id)}",
        )
    elif isinstance(exc, GatedRepoError):
        msg = f"{repo_id} is gated on {endpoint}"
        hint = "accept its terms on the hub and set HF_TOKEN, " + local_hint(repo_id)
    elif isinstance(exc, RepositoryNotFoundError):
        msg = f"there is no repo {repo_id} on {endpoint} (or it is private)"
        hint = "check the id (e.g. openai/shap-e), set HF_TOKEN for a private repo, " + local_hint(
            repo_id
        )
    elif isinstance(exc, RevisionNotFoundError):
        msg, hint = f"{repo_id} has no such revision on {endpoint}", retry
    elif isinstance(exc, LocalEntryNotFoundError):
        # hf_hub_download's metadata request failed (after its own retries) and the file is not
        # cached: the real reason is the chained error.
        cause = exc.__cause__ or exc.__context__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        msg = f"the hub at {endpoint} did not answer ({why})"
        hint = f"check the network or proxy and {retry}, " + local_hint(repo_id)
    elif isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        msg = f"the hub at {endpoint} answered {status}"
        hint = f"try again later ({retry}), " + local_hint(repo_id)
    elif isinstance(exc, HTTP_ERROR):
        msg = f"cannot reach the hub at {endpoint} ({type(exc).__name__}: {exc})"
        hint = f"check the network or proxy and {retry}, " + local_hint(repo_id)
    elif isinstance(exc, DamagedDownload):
        msg = str(exc)
        hint = (
            f"run `{download_command(repo_id, kind)}` again to fetch it afresh; if that fails "
            f"the same way, a proxy or mirror between here and {endpoint} alters the download, "
            + local_hint(repo_id)
        )
    elif isinstance(exc, OSError):  # disk full, permissions, a size mismatch after a transfer
        msg, hint = f"{type(exc).__name__}: {exc}", f"check free disk space and {retry}"
    else:
        msg, hint = f"{type(exc).__name__}: {exc}", f"{retry}, " + local_hint(repo_id)
    log.debug("hub error while trying to %s %s", action, repo_id, exc_info=exc)
    return ShapEError(MODEL_UNAVAILABLE, f"could not {action} {repo_id}: {msg}", hint, "model")
