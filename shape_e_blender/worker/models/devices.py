"""Devices and precision: what a request's ``device`` and ``precision`` become, what this
machine offers (``hello``), and what running out of memory on one of them says.

Weights are always held in float32. Lower precision comes from autocast while sampling
(worker/sampling.py), so the sampler state stays float32 and the renderer, whose positional
encoding reaches octave 2^14, never runs in half precision.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch

from ...core.errors import DEVICE_UNAVAILABLE, INVALID_PARAMS, OUT_OF_MEMORY, ShapEError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

_OOM_HINTS = {
    "loading": "close other programs that use the GPU's memory, or choose device cpu",
    # In the machine's memory: "choose device cpu" would change nothing. fp32 weights of the
    # released models: 316 M + 124 M + 226 M parameters, 2.7 GB.
    "loading in memory": "close other programs to free memory: the released models take about 3 GB",
    "sampling": "choose precision fp16 or fewer variants",
    "decoding": "choose a smaller grid_size (128 is the usual) or fewer variants",
}


@dataclass(frozen=True)
class DeviceChoice:
    """The torch device actually used and the resolved precision.

    ``precision`` applies to the prior and the CLIP encoder through autocast; the renderer always
    runs in float32.
    """

    device: str  # "cuda:0", "mps" or "cpu"
    precision: str  # "fp32", "fp16" or "bf16"

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _available() -> str:
    names = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return ", ".join(names)


def resolve_device(device: str = "auto", precision: str = "auto") -> DeviceChoice:
    """Turn the request's ``device`` and ``precision`` into what will really be used.

    auto device: cuda, then mps, then cpu. auto precision: fp16 on cuda, fp32 elsewhere.
    fp16 on cpu is refused rather than silently changed: CPU autocast in float16 is slow and
    poorly supported, while bf16 works there.
    """
    dev = (device or "auto").lower()
    prec = (precision or "auto").lower()
    if prec not in ("auto", *DTYPES):
        raise ShapEError(
            INVALID_PARAMS,
            f"precision: {precision!r} is not a precision",
            "use auto, fp32, fp16 or bf16",
            "precision",
        )

    if dev == "auto":
        if torch.cuda.is_available():
            dev = f"cuda:{torch.cuda.current_device()}"
        elif _mps_available():
            dev = "mps"
        else:
            dev = "cpu"
    elif dev == "cuda" or dev.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ShapEError(
                DEVICE_UNAVAILABLE,
                f"device {device!r} is not available: this torch sees no CUDA GPU"
                + ("" if torch.version.cuda else " (it is a CPU-only build)"),
                f"choose auto or one of: {_available()}; for a GPU install the CUDA worker "
                "environment",
                "device",
            )
        index = torch.cuda.current_device() if dev == "cuda" else int(dev.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ShapEError(
                DEVICE_UNAVAILABLE,
                f"device {device!r} is not available: there are "
                f"{torch.cuda.device_count()} CUDA GPU(s)",
                f"choose one of: {_available()}",
                "device",
            )
        dev = f"cuda:{index}"
    elif dev == "mps":
        if not _mps_available():
            raise ShapEError(
                DEVICE_UNAVAILABLE,
                "device 'mps' is not available (it needs Apple silicon and macOS 12.3 or later)",
                f"choose auto or one of: {_available()}",
                "device",
            )
    elif dev != "cpu":
        raise ShapEError(
            INVALID_PARAMS,
            f"device: {device!r} is not a device",
            "use auto, cuda, cuda:N, mps or cpu",
            "device",
        )

    kind = torch.device(dev).type
    if prec == "auto":
        prec = "fp16" if kind == "cuda" else "fp32"
    if kind == "cpu" and prec == "fp16":
        raise ShapEError(
            INVALID_PARAMS,
            "precision: fp16 is not supported on the cpu",
            "choose fp32 or bf16 on the cpu (auto picks fp32), or run on a GPU",
            "precision",
        )
    if kind == "cuda" and prec == "bf16" and not torch.cuda.is_bf16_supported():
        raise ShapEError(
            INVALID_PARAMS,
            f"precision: {torch.cuda.get_device_name(dev)} does not support bf16",
            "choose fp16 (auto) or fp32",
            "precision",
        )
    return DeviceChoice(device=dev, precision=prec)


def device_report() -> list[dict[str, Any]]:
    """The devices this worker can use, as sent in ``hello``; memory in bytes, None if unknown."""
    out: list[dict[str, Any]] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            # Free memory needs a CUDA context on that device (hundreds of MB each): ask only
            # where this process already has one, i.e. after a job ran there.
            free = None
            if torch.cuda.is_initialized() and torch.cuda.memory_reserved(i) > 0:
                free = int(torch.cuda.mem_get_info(i)[0])
            out.append(
                {
                    "name": f"cuda:{i}",
                    "type": "cuda",
                    "label": props.name,
                    "memory_total": int(props.total_memory),
                    "memory_free": free,
                }
            )
    if _mps_available():
        total = None
        if hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
            total = int(torch.mps.recommended_max_memory())
        out.append(
            {
                "name": "mps",
                "type": "mps",
                "label": "Apple GPU (mps)",
                "memory_total": total,
                "memory_free": None,
            }
        )
    out.append(
        {
            "name": "cpu",
            "type": "cpu",
            "label": platform.processor() or platform.machine() or "cpu",
            "memory_total": None,
            "memory_free": None,
        }
    )
    return out


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a result, as sent in ``hello`` and each result."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out


def map_runtime_error(
    exc: BaseException, stage: str, device_type: str | None = None
) -> ShapEError | None:
    """A ShapEError for errors with a known remedy (running out of memory), else None.

    ``stage`` is "loading", "sampling" or "decoding"; it picks the hint, and for loading so does
    ``device_type`` ("cuda": a GPU's memory; any other: the machine's). Shared by sampling and
    the engine's loading and decoding so all say the same thing.
    """
    if isinstance(exc, ShapEError):
        return exc
    text = str(exc).lower()
    oom = isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
    )
    if not oom:
        return None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # give back what the failed step held before the next job
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ShapEError(
        OUT_OF_MEMORY,
        f"out of memory while {stage}: {first_line}",
        _OOM_HINTS.get(
            f"{stage} in memory" if device_type not in (None, "cuda") else stage,
            _OOM_HINTS.get(stage, "choose smaller settings or fewer variants"),
        ),
    )
