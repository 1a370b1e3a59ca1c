"""Generation parameters: the one table of fields, and their validation.

``GenerationParams`` is the table. Each field is declared once, here, with its type, default,
range, UI label, description and (for enums) its values; every front end is built from it:

- the protocol's validation (``GenerationParams.create`` / ``from_json``);
- the CLIs' arguments (core/arguments.py: ``--grid-size`` for ``grid_size``);
- Blender's properties (``blender/props.py`` turns a ``Setting`` into a ``bpy.props`` property);
- ``docs/protocol.md``'s parameter table, which a test checks against ``SETTINGS``.

Validation happens here, once, at the boundary. Every error names the field and says what to do.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import invalid

DEFAULT_TEXT_MODEL = "openai/shap-e"
DEFAULT_IMAGE_MODEL = "openai/shap-e-img2img"
SEED_MAX = 2**31 - 1  # Blender's IntProperty and ID properties hold no more.
SOURCES = ("prompt", "image", "latent")  # exactly one of them says what to generate from
# A texture needs a UV map, and xatlas's unwrap grows faster than the face count (measured here:
# 0.3 s at 5,000 faces, 2 s at 20,000, 8.5 s at 50,000): a textured mesh is decimated to
# TEXTURE_FACES when ``faces`` is 0, and more than UV_MAX_FACES are refused.
TEXTURE_FACES = 20_000
UV_MAX_FACES = 50_000
# Fewer faces than this leave no recognisable shape (a decimation to 5 gave a dozen slivers).
FACES_MIN = 100
# Textures are powers of two, as GPUs mipmap them and engines expect; below 64 a texel spans
# whole parts of the object.
TEXTURE_MIN = 64


@dataclass(frozen=True)
class Choice:
    """One value of an enum setting: the protocol spells it lower case, Blender upper case."""

    value: str
    label: str
    description: str

    @property
    def identifier(self) -> str:
        return self.value.upper()


@dataclass(frozen=True)
class Setting:
    """Everything a front end needs to offer, check and explain one generation parameter."""

    name: str
    kind: type  # str, int or float (from the field's annotation)
    default: Any  # None: no value (sources, model) or the mode's default (mode_defaults)
    label: str
    description: str
    hint: str = ""  # what to do when a value is refused
    range: tuple[Any, Any] | None = None  # inclusive; values outside are refused
    soft_max: Any = None  # sliders stop here; larger values can still be typed
    choices: tuple[Choice, ...] = ()
    pattern: str = ""  # further accepted values of an enum setting (e.g. cuda:N), a regex
    mode_defaults: Mapping[str, Any] = field(default_factory=dict)  # by mode: text, image
    cli: str = ""  # the CLI flag where it is not the name's (--texture for texture_size)

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.choices)

    def identifier(self, value: Any) -> Any:
        """A value as an enum identifier (Blender's spelling: upper case); others unchanged."""
        return value.upper() if self.choices and isinstance(value, str) else value

    def from_identifier(self, value: Any) -> Any:
        """An enum identifier as the protocol spells it (lower case); others unchanged."""
        return value.lower() if self.choices and isinstance(value, str) else value

    def default_for(self, mode: str) -> Any:
        return self.mode_defaults.get(mode, self.default)

    def check(self, value: Any) -> Any:
        """``value`` validated (None and "" give the default); raises ShapEError naming it."""
        if value is None or (value == "" and self.kind is str):
            return self.default
        if self.kind is int:
            return self._int(value)
        if self.kind is float:
            return self._float(value)
        if not isinstance(value, str):
            raise invalid(self.name, f"must be text, not {type(value).__name__}", self.hint)
        if self.choices:
            lowered = value.lower()
            if lowered not in self.values and not (
                self.pattern and re.fullmatch(self.pattern, lowered)
            ):
                raise invalid(self.name, f"{value!r} is not a {self.name}", self.hint)
            return lowered
        return value

    def _int(self, value: Any) -> int:
        # 3.0 is refused like 3.5: a client that sends a float where an integer belongs has a
        # bug worth telling about, and the value never silently changes type.
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(self.name, f"must be a whole number, not {value!r}", self.hint)
        self._in_range(value)
        return value

    def _float(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(self.name, "must be a number", self.hint)
        try:
            value = float(value)
        except OverflowError:  # an integer past float's range (JSON has no limit)
            raise invalid(self.name, f"is outside {self.range_text}", self.hint) from None
        if not math.isfinite(value):
            raise invalid(self.name, f"{value} is not a finite number", self.hint)
        self._in_range(value)
        return value

    def _in_range(self, value: Any) -> None:
        if self.range is not None and not self.range[0] <= value <= self.range[1]:
            raise invalid(self.name, f"{value} is outside {self.range_text}", self.hint)

    @property
    def range_text(self) -> str:
        """ "32..512", "0..100": the range as the errors, the CLI and the docs write it."""
        if self.range is None:
            return ""
        return "..".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.range)


_META = "shape_e_setting"


def _setting(default: Any, label: str, description: str, **extra: Any) -> Any:
    """A GenerationParams field that carries its Setting (completed in ``_table`` below)."""
    return field(
        default=default, metadata={_META: {"label": label, "description": description, **extra}}
    )


DEVICE_CHOICES = (
    Choice("auto", "Auto", "CUDA if present, then Apple MPS, then the CPU"),
    Choice("cuda", "CUDA", "An NVIDIA GPU"),
    Choice("mps", "Apple MPS", "Apple silicon's GPU"),
    Choice("cpu", "CPU", "No GPU: a full generation takes about 20 minutes"),
)
PRECISION_CHOICES = (
    Choice("auto", "Auto", "fp16 autocast on CUDA, fp32 elsewhere"),
    Choice("fp32", "FP32", "Full precision everywhere"),
    Choice("fp16", "FP16", "Half precision for the prior and the text/image encoder"),
    Choice("bf16", "BF16", "bfloat16 for the prior and the text/image encoder"),
)


@dataclass(frozen=True)
class GenerationParams:
    """What to generate. Exactly one of ``prompt``, ``image`` or ``latent`` is set.

    ``latent`` re-decodes a saved ``latent.npy`` (shape (1024, 1024) or (N, 1024, 1024)) at another
    grid size without sampling again. ``guidance_scale`` None means the mode's default (15 for
    text, 3 for images). ``model`` None means the mode's default hub repo.
    """

    prompt: str | None = _setting(
        None, "Prompt", "What to generate", hint="describe the object, e.g. 'a red chair'"
    )
    image: str | None = _setting(
        None,
        "Image",
        "Image of one object on a plain background",
        hint="choose a PNG or JPEG of one object on a plain background",
    )
    latent: str | None = _setting(
        None,
        "Latent",
        "A latent.npy saved by an earlier job: decode it again, without sampling",
        hint="pass the latent.npy of an earlier job (in its variant folder)",
    )
    model: str | None = _setting(
        None,
        "Model",
        f"Hub repo id or local folder (default {DEFAULT_TEXT_MODEL}; {DEFAULT_IMAGE_MODEL} for "
        "images)",
        hint="e.g. openai/shap-e",
    )
    seed: int = _setting(
        0,
        "Seed",
        "Variant i uses seed + i; the same seed gives the same shape",
        range=(0, SEED_MAX),
        hint="pick a seed between 0 and 2147483647",
    )
    steps: int = _setting(
        64,  # the paper's; the pipelines' own default is 25
        "Steps",
        "Sampling steps (64 is the paper's setting; fewer is faster)",
        range=(1, 1000),
        soft_max=128,
        hint="64 is the paper's setting; fewer is faster",
    )
    guidance_scale: float | None = _setting(
        None,
        "Guidance Scale",
        "How closely to follow the prompt or the image (15 suits text, 3 suits images)",
        range=(0.0, 100.0),
        mode_defaults={"text": 15.0, "image": 3.0},
        hint="15 suits text, 3 suits images",
    )
    grid_size: int = _setting(
        128,
        "Mesh Resolution",
        "Grid size per axis for mesh extraction (128 is the usual; up to 512)",
        range=(32, 512),
        soft_max=256,
        hint="128 is the usual mesh resolution",
    )
    faces: int = _setting(
        0,
        "Faces",
        "Decimate each mesh to about this many triangles, keeping its outline and colours "
        f"(0: the full mesh; else at least {FACES_MIN})",
        range=(0, 10_000_000),
        soft_max=200_000,
        hint=f"0 keeps the full mesh; {FACES_MIN} is the fewest; 5000 to 50000 suit a game engine",
    )
    texture_size: int = _setting(
        0,
        "Texture Size",
        "Bake the model's colours into a square base-colour texture of this many pixels a side "
        f"(a power of two from {TEXTURE_MIN}), with a UV map (0: vertex colours only; the mesh is "
        f"decimated to {TEXTURE_FACES} faces when Faces is 0)",
        range=(0, 4096),
        soft_max=2048,
        hint=f"0 for vertex colours only, or a power of two from {TEXTURE_MIN} to 4096 such as "
        "1024 or 2048",
        cli="--texture",
    )
    variants: int = _setting(
        1,
        "Variants",
        "How many meshes to generate, side by side",
        range=(1, 16),
        hint="generate at most 16 variants per request",
    )
    device: str = _setting(
        "auto",
        "Device",
        "Where the model runs: auto picks CUDA, then MPS, then the CPU",
        choices=DEVICE_CHOICES,
        pattern=r"cuda:[0-9]+",  # not \d: other scripts' digits are no device index
        hint="use auto, cuda, cuda:N, mps or cpu",
    )
    precision: str = _setting(
        "auto",
        "Precision",
        "Auto: fp16 autocast on CUDA, fp32 elsewhere; the renderer always runs in fp32",
        choices=PRECISION_CHOICES,
        hint="use auto, fp32, fp16 or bf16",
    )

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
        # A latent's own sampling is done: only the mesh is made again, as for text.
        mode = "image" if self.mode == "image" else "text"
        return float(SETTINGS["guidance_scale"].default_for(mode))

    @property
    def effective_model(self) -> str:
        if self.model:
            return self.model
        return DEFAULT_IMAGE_MODEL if self.mode == "image" else DEFAULT_TEXT_MODEL

    def variant_seeds(self) -> list[int]:
        """One seed per variant, seed + i: any variant can be made again alone (the same shape;
        a batch's arithmetic differs from a single run's by about 2e-5)."""
        return [variant_seed(self.seed, i) for i in range(self.variants)]

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
        return cls.create(**{k: v for k, v in obj.items() if k in SETTINGS})

    @classmethod
    def create(cls, **kwargs: Any) -> GenerationParams:
        """Build validated parameters; raises ShapEError naming the bad field."""
        sources = [k for k in SOURCES if kwargs.get(k) not in (None, "")]
        if len(sources) != 1:
            raise invalid(
                "prompt",
                "give exactly one of prompt, image or latent"
                + (f" (got {', '.join(sources)})" if sources else ""),
                "pass a text prompt, an image path, or a saved latent.npy path",
            )
        src = sources[0]
        value = kwargs[src]
        if not isinstance(value, str):
            raise invalid(
                src, f"must be a string, not {type(value).__name__}", f"pass {src} as text"
            )
        if "\0" in value:  # Blender's names and properties would cut it there, silently
            raise invalid(src, "holds a NUL character", f"remove it from the {src}")
        if src == "prompt":
            value = " ".join(value.split())
            if not value:
                raise invalid("prompt", "is empty", SETTINGS["prompt"].hint)
        unknown = set(kwargs) - set(SETTINGS)
        if unknown:
            name = sorted(unknown)[0]
            raise invalid(name, "is not a generation parameter", "check the spelling")
        out: dict[str, Any] = {
            s.name: s.check(kwargs.get(s.name)) for s in SETTINGS.values() if s.name not in SOURCES
        }
        out[src] = value
        faces, texture = out["faces"], out["texture_size"]
        if 0 < faces < FACES_MIN:
            raise invalid(
                "faces",
                f"{faces} faces are too few to keep a shape",
                f"ask for 0 (the full mesh) or at least {FACES_MIN} faces",
            )
        if texture and (texture < TEXTURE_MIN or texture & (texture - 1)):
            raise invalid(
                "texture_size",
                f"{texture} is not a power of two from {TEXTURE_MIN} to 4096",
                SETTINGS["texture_size"].hint,
            )
        if texture and faces > UV_MAX_FACES:
            raise invalid(
                "faces",
                f"{faces} faces are too many to unwrap for a texture (the unwrap takes "
                f"minutes past {UV_MAX_FACES})",
                f"ask for at most {UV_MAX_FACES} faces with a texture, or for no texture",
            )
        return cls(**out)

    def kept_whole(self, face_count: int) -> str:
        """The warning for a mesh of ``face_count`` faces when ``faces`` asked for no fewer: it
        is not decimated (that is known only once the mesh is made, so it is not refused)."""
        return (
            f"faces: the mesh has {face_count} faces, no more than the {self.faces} asked, so it "
            "was kept whole (ask for fewer faces to decimate it)"
        )

    @property
    def target_faces(self) -> int:
        """The face count to decimate to (0: none): ``faces``, or TEXTURE_FACES for a texture."""
        if self.faces == 0 and self.texture_size:
            return TEXTURE_FACES
        return self.faces


def variant_seed(seed: int, index: int) -> int:
    """The seed of variant ``index`` of a request made with ``seed`` (wraps at 2^31)."""
    return (seed + index) % (SEED_MAX + 1)


def _table() -> dict[str, Setting]:
    hints = typing.get_type_hints(GenerationParams)
    table = {}
    for f in fields(GenerationParams):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # "int | None" -> int
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        table[f.name] = Setting(name=f.name, kind=kind, default=f.default, **f.metadata[_META])
    return table


SETTINGS: dict[str, Setting] = _table()
