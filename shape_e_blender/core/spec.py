"""Scene specs: a TOML file that lists the objects of a scene (docs/scenes.md is the reference).

    [defaults]
    steps = 32
    text_model = "openai/shap-e"

    [[object]]
    name = "Chair"
    prompt = "a red chair"
    location = [0, 0, 0]          # metres: where the bottom centre of the object stands
    rotation = [0, 0, 90]         # degrees, XYZ
    size = 0.9                    # metres of the largest dimension (or scale = 1.5 or [x, y, z])
    texture_size = 1024           # a baked texture (and faces = 5000: a decimated mesh)
    mark_asset = true             # an asset, saved to the preferences' asset library
    collection = "Props/Chairs"   # made when missing; "/" nests

The file is read with tomllib and validated whole here, before anything is generated: every
problem is collected and reported at once, each naming the object (its index and name) and the
field, and saying what is allowed. The generation fields go through GenerationParams (one
validation for every front end); paths (images, model folders) are relative to the spec file.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import INVALID_PARAMS, ShapEError, invalid
from .files import FILE, is_dir, probe
from .mesh import SIZE_MAX
from .names import object_name_for
from .params import GenerationParams

GENERATION_KEYS = (
    "prompt",
    "image",
    "model",
    "seed",
    "variants",
    "steps",
    "guidance_scale",
    "grid_size",
    "faces",
    "texture_size",
)
PLACEMENT_KEYS = ("location", "rotation", "scale", "size", "collection", "mark_asset")
OBJECT_KEYS = ("name", *GENERATION_KEYS, *PLACEMENT_KEYS)
MODEL_DEFAULTS = {"text": "text_model", "image": "image_model"}  # [defaults] keys, by mode
DEFAULT_KEYS = (*OBJECT_KEYS, *MODEL_DEFAULTS.values())
TABLES = ("defaults", "object")
SPEC_HINT = "see docs/scenes.md for the scene spec format"


@dataclass(frozen=True)
class Placement:
    """Where an object goes; none of it is in the job key, so changing it regenerates nothing."""

    location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # degrees, XYZ Euler
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size: float = 0.0  # metres of the largest dimension; 0: ``scale`` as given
    collection: str = ""  # "Props/Chairs"; "": the scene's own collection
    mark_asset: bool = False  # marked as an asset (and saved to the asset library), as built

    @property
    def collection_path(self) -> list[str]:
        return [part.strip() for part in self.collection.split("/")] if self.collection else []


@dataclass(frozen=True)
class SpecObject:
    index: int  # 1-based, as the errors and the progress count
    name: str  # unique in its spec: what the objects are named and found again by
    params: GenerationParams
    placement: Placement

    @property
    def label(self) -> str:
        return f"object {self.index} ({self.name!r})"


@dataclass(frozen=True)
class SceneSpec:
    path: Path  # absolute
    objects: tuple[SpecObject, ...]


def load_spec(
    path: str | Path,
    *,
    text_model: str | None = None,
    image_model: str | None = None,
    common: Mapping[str, Any] | None = None,
) -> SceneSpec:
    """Read and validate a spec file; raises ShapEError (field ``filepath``) listing every problem.

    ``text_model`` and ``image_model`` (a command's options) take the place of ``[defaults]``'s;
    ``common`` holds generation parameters the spec has no key for (device, precision).
    """
    path = Path(path).expanduser().resolve()
    try:
        # utf-8-sig: Windows editors start a UTF-8 file with a byte-order mark.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise invalid(
            "filepath",
            f"cannot read the scene spec {path}: {exc.strerror or exc}",
            "pass the path of a .toml scene spec",
        ) from None
    except UnicodeDecodeError:
        raise invalid("filepath", f"{path} is not UTF-8 text", "save the spec as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise invalid(
            "filepath", f"{path.name} is not valid TOML: {exc}", f"fix that line; {SPEC_HINT}"
        ) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise invalid(
            "filepath",
            f"{path.name} nests arrays or tables too deeply to be read",
            f"a scene spec needs two levels; {SPEC_HINT}",
        ) from None
    return parse_spec(
        data, path, text_model=text_model, image_model=image_model, common=common or {}
    )


def parse_spec(
    data: Mapping[str, Any],
    path: Path,
    *,
    text_model: str | None = None,
    image_model: str | None = None,
    common: Mapping[str, Any] | None = None,
) -> SceneSpec:
    """A spec's parsed TOML, validated; paths resolve from ``path``'s folder."""
    problems: list[str] = []
    for key in data:
        if key not in TABLES:
            problems.append(
                f"{key!r} is not part of a scene spec: it takes a [defaults] table and "
                "[[object]] tables"
            )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append("defaults: must be a table ([defaults])")
        defaults = {}
    for key in defaults:
        if key not in DEFAULT_KEYS:
            problems.append(
                f"[defaults], {key}: is not a spec key; allowed: {', '.join(DEFAULT_KEYS)}"
            )
    entries = data.get("object")
    if entries is None or entries == []:
        problems.append("the spec lists no object: add [[object]] tables, each with a prompt")
        entries = []
    elif not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append("object: must be [[object]] tables, one per object")
        entries = []
    mode_models = {
        "text": text_model or defaults.get("text_model"),
        "image": image_model or defaults.get("image_model"),
    }
    objects: list[SpecObject] = []
    taken: dict[str, int] = {}
    reader = _Reader(path.parent, problems, dict(common or {}))
    for index, entry in enumerate(entries, 1):
        obj = reader.object(index, entry, defaults, mode_models, taken)
        if obj is not None:
            objects.append(obj)
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "a problem"
        raise ShapEError(
            INVALID_PARAMS,
            f"the scene spec {path} has {count}; nothing was generated:\n"
            + "\n".join(f"- {p}" for p in problems),
            SPEC_HINT,
            "filepath",
        )
    return SceneSpec(path, tuple(objects))


class _Reader:
    """Reads one [[object]] at a time, adding what is wrong to ``problems``."""

    def __init__(self, base: Path, problems: list[str], common: dict[str, Any]) -> None:
        self.base = base
        self.problems = problems
        self.common = common
        self._pending = ""  # a problem with the object's name, told once its label is known

    def object(
        self,
        index: int,
        entry: dict[str, Any],
        defaults: Mapping[str, Any],
        mode_models: Mapping[str, Any],
        taken: dict[str, int],
    ) -> SpecObject | None:
        values = {k: v for k, v in defaults.items() if k in OBJECT_KEYS}
        if "prompt" in entry or "image" in entry:  # its own source replaces the defaults'
            values.pop("prompt", None)
            values.pop("image", None)
        values.update(entry)
        own_name = values.get("name")
        name = self._name(index, own_name, values, taken)
        label = f"object {index}" + (
            f" ({name!r})" if name else f" ({own_name!r})" if isinstance(own_name, str) else ""
        )
        if name is None and self._pending:
            self.problems.append(self._pending.format(label=label))
        before = len(self.problems)
        for key in entry:
            if key not in OBJECT_KEYS:
                self.problems.append(
                    f"{label}, {key}: is not an object key; allowed: {', '.join(OBJECT_KEYS)}"
                )
        params = self._params(label, values, "model" in entry, mode_models)
        placement = self._placement(label, values)
        if params is None or placement is None or name is None or len(self.problems) > before:
            return None
        return SpecObject(index, name, params, placement)

    def _params(
        self, label: str, values: dict[str, Any], own_model: bool, mode_models: Mapping[str, Any]
    ) -> GenerationParams | None:
        given = {k: values[k] for k in GENERATION_KEYS if k in values}
        mode = "image" if "image" in given and "prompt" not in given else "text"
        if not own_model and mode_models.get(mode):
            given["model"] = mode_models[mode]
        if isinstance(given.get("model"), str) and given["model"].strip():
            folder = self.base / Path(given["model"]).expanduser()
            if is_dir(folder):  # a local folder beside the spec, else a hub repo id
                given["model"] = str(folder.resolve())
        if isinstance(given.get("image"), str) and given["image"] and "\0" not in given["image"]:
            image = self.base / Path(given["image"]).expanduser()
            found, why = probe(image)
            if found != FILE:
                told = "" if why == "does not exist" else f": it {why or 'is a folder'}"
                self.problems.append(
                    f"{label}, image: there is no file {image} (image paths are relative to "
                    f"the spec file){told}"
                )
                return None
            given["image"] = str(image.resolve())
        try:
            return GenerationParams.create(**given, **self.common)
        except ShapEError as err:
            self.problems.append(f"{label}, {err.message}" + (f" ({err.hint})" if err.hint else ""))
            return None

    def _placement(self, label: str, values: dict[str, Any]) -> Placement | None:
        out: dict[str, Any] = {}
        for key, what in (("location", "metres"), ("rotation", "degrees")):
            if key in values:
                vec = _vector(values[key])
                if vec is None:
                    self._bad(label, key, values[key], f"three numbers [x, y, z] in {what}")
                else:
                    out[key] = vec
        if "scale" in values and "size" in values:
            self.problems.append(
                f"{label}, size: give scale or size, not both (size scales the object so its "
                "largest dimension is that many metres)"
            )
        if "scale" in values:
            raw = values["scale"]
            vec = _vector(raw if isinstance(raw, list) else [raw] * 3)
            if vec is None or min(vec) <= 0:
                self._bad(label, "scale", raw, "a number above 0, or three of them [x, y, z]")
            else:
                out["scale"] = vec
        if "size" in values:
            size = _number(values["size"])
            if size is None or not 0 < size <= SIZE_MAX:
                self._bad(
                    label,
                    "size",
                    values["size"],
                    f"a number of metres above 0, at most {SIZE_MAX:g}",
                )
            else:
                out["size"] = size
        if "mark_asset" in values:
            if isinstance(values["mark_asset"], bool):
                out["mark_asset"] = values["mark_asset"]
            else:
                self._bad(label, "mark_asset", values["mark_asset"], "true or false")
        if "collection" in values:
            raw = values["collection"]
            parts = raw.split("/") if isinstance(raw, str) else []
            if not parts or not all(p.strip() and "\0" not in p for p in parts):
                self._bad(label, "collection", raw, 'a collection name; "/" nests: "Props/Chairs"')
            else:
                out["collection"] = "/".join(p.strip() for p in parts)
        return Placement(**out) if len(out) == len(set(values) & set(PLACEMENT_KEYS)) else None

    def _name(
        self, index: int, own: Any, values: dict[str, Any], taken: dict[str, int]
    ) -> str | None:
        """The object's name (its own, or one made from its source); None when its own cannot
        be used, with the problem in ``_pending`` until the object's label is known."""
        self._pending = ""
        if own is not None:
            if not isinstance(own, str) or not own.strip() or "\0" in own:
                self._pending = f"{{label}}, name: must be a name (text, not empty), not {own!r}"
                return None
            name = own.strip()
            if name in taken:
                self._pending = (
                    f"{{label}}, name: {name!r} is the name of object {taken[name]} too; give "
                    "each object its own name"
                )
                return None
        else:
            source = values.get("prompt") or values.get("image")
            base = object_name_for(source if isinstance(source, str) else "")
            name, n = base, 1
            while name in taken:  # a second "a red chair" is "Red chair 2"
                n += 1
                name = f"{base} {n}"
        taken[name] = index
        return name

    def _bad(self, label: str, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{label}, {key}: must be {allowed}, not {value!r}")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _vector(value: Any) -> tuple[float, float, float] | None:
    if not isinstance(value, list) or len(value) != 3:
        return None
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    x, y, z = (float(n) for n in numbers if n is not None)
    return (x, y, z)
