"""Generation parameters: one set of names for the protocol, the CLI, the operators and the worker.

Validation happens here, once, at the boundary. Every error names the field and says what to do.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import invalid

DEFAULT_TEXT_MODEL = "openai/shap-e"
DEFAULT_IMAGE_MODEL = "openai/shap-e-img2img"

SEED_MAX = 2**31 - 1  # Blender's IntProperty and ID properties hold no more.
STEPS_RANGE = (1, 1000)
GRID_RANGE = (32, 512)
VARIANTS_RANGE = (1, 16)
GUIDANCE_RANGE = (0.0, 100.0)
DEFAULT_STEPS = 64  # the paper's; the pipelines' own default is 25
DEFAULT_GRID = 128
TEXT_GUIDANCE = 15.0
IMAGE_GUIDANCE = 3.0

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class GenerationParams:
    """What to generate. Exactly one of ``prompt``, ``image`` or ``latent`` is set.

    ``latent`` re-decodes a saved ``latent.npy`` (shape (1024, 1024) or (N, 1024, 1024)) at another
    grid size without sampling again. ``guidance_scale`` None means the mode's default (15 for
    text, 3 for images). ``model`` None means the mode's default hub repo.
    """

    prompt: str | None = None
    image: str | None = None
    latent: str | None = None
    model: str | None = None
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance_scale: float | None = None
    grid_size: int = DEFAULT_GRID
    variants: int = 1
    device: str = "auto"
    precision: str = "auto"

    @property
    def mode(self) -> str:
        if self.prompt is not None:
            return "text"
        if self.image is not None:
            return "image"
        return "latent"

    @property
    def effective_guidance(self) -> float:
        if self.guidance_scale is not None:
            return self.guidance_scale
        return IMAGE_GUIDANCE if self.mode == "image" else TEXT_GUIDANCE

    @property
    def effective_model(self) -> str:
        if self.model:
            return self.model
        return DEFAULT_IMAGE_MODEL if self.mode == "image" else DEFAULT_TEXT_MODEL

    def variant_seeds(self) -> list[int]:
        """One seed per variant, seed + i, so any variant can be regenerated alone."""
        return [(self.seed + i) % (SEED_MAX + 1) for i in range(self.variants)]

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def resolved(self) -> GenerationParams:
        """The same request with the defaults that depend on the mode filled in."""
        return replace(self, guidance_scale=self.effective_guidance, model=self.effective_model)

    @classmethod
    def from_json(cls, obj: Any) -> GenerationParams:
        """Validate a protocol ``params`` object (extra keys such as job_dir are ignored)."""
        if not isinstance(obj, dict):
            raise invalid("params", "must be a JSON object", 'send {"prompt": "a red chair", ...}')
        known = {f.name for f in fields(cls)}
        return cls.create(**{k: v for k, v in obj.items() if k in known})

    @classmethod
    def create(cls, **kwargs: Any) -> GenerationParams:
        """Build validated parameters; raises ShapEError naming the bad field."""
        sources = [k for k in ("prompt", "image", "latent") if kwargs.get(k) not in (None, "")]
        if len(sources) != 1:
            raise invalid(
                "prompt",
                "give exactly one of prompt, image or latent"
                + (f" (got {', '.join(sources)})" if sources else ""),
                "pass a text prompt, an image path, or a saved latent.npy path",
            )
        out: dict[str, Any] = {}
        src = sources[0]
        value = kwargs[src]
        if not isinstance(value, str):
            raise invalid(
                src, f"must be a string, not {type(value).__name__}", f"pass {src} as text"
            )
        if src == "prompt":
            value = " ".join(value.split())
            if not value:
                raise invalid("prompt", "is empty", "describe the object, e.g. 'a red chair'")
        out[src] = value

        model = kwargs.get("model")
        if model not in (None, ""):
            if not isinstance(model, str):
                raise invalid(
                    "model", "must be a hub repo id or a folder path", "e.g. openai/shap-e"
                )
            out["model"] = model

        out["seed"] = _int(kwargs, "seed", 0, 0, SEED_MAX, "pick a seed between 0 and 2147483647")
        out["steps"] = _int(
            kwargs,
            "steps",
            DEFAULT_STEPS,
            *STEPS_RANGE,
            "64 is the paper's setting; fewer is faster",
        )
        out["grid_size"] = _int(
            kwargs, "grid_size", DEFAULT_GRID, *GRID_RANGE, "128 is the usual mesh resolution"
        )
        out["variants"] = _int(
            kwargs, "variants", 1, *VARIANTS_RANGE, "generate at most 16 variants per request"
        )

        guidance = kwargs.get("guidance_scale")
        if guidance is not None:
            if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
                raise invalid("guidance_scale", "must be a number", "15 suits text, 3 suits images")
            guidance = float(guidance)
            lo, hi = GUIDANCE_RANGE
            if not math.isfinite(guidance) or not lo <= guidance <= hi:
                raise invalid(
                    "guidance_scale",
                    f"{guidance} is outside {lo:g}..{hi:g}",
                    "15 suits text, 3 suits images",
                )
            out["guidance_scale"] = guidance

        device = kwargs.get("device", "auto")
        if not isinstance(device, str) or not _DEVICE_RE.match(device.lower()):
            raise invalid(
                "device", f"{device!r} is not a device", "use auto, cuda, cuda:N, mps or cpu"
            )
        out["device"] = device.lower()
        precision = kwargs.get("precision", "auto")
        if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
            raise invalid(
                "precision", f"{precision!r} is not a precision", "use auto, fp32, fp16 or bf16"
            )
        out["precision"] = precision.lower()

        unknown = set(kwargs) - {f.name for f in fields(cls)}
        if unknown:
            name = sorted(unknown)[0]
            raise invalid(name, "is not a generation parameter", "check the spelling")
        return cls(**out)


def _int(kwargs: dict[str, Any], name: str, default: int, lo: int, hi: int, hint: str) -> int:
    value = kwargs.get(name, default)
    if value is None:
        value = default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"must be a whole number, not {value!r}", hint)
    if not lo <= value <= hi:
        raise invalid(name, f"{value} is outside {lo}..{hi}", hint)
    return value
