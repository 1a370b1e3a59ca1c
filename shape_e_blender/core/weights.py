"""What a model folder holds and which of its files are used: the one rule for weight files.

A model folder is laid out like the hub repos (``model_index.json`` plus one sub-folder per
component). The download (which files to fetch, whether a cached snapshot is complete) and the
loader (which ``variant=`` and ``use_safetensors=`` to pass) both decide through this module, so
what is fetched is exactly what is loaded.

Components per kind:

- text: prior, text_encoder, tokenizer, scheduler, shap_e_renderer
- image: prior, image_encoder, image_processor, scheduler, shap_e_renderer
- renderer (re-decoding a saved latent): shap_e_renderer

Weight files of a component (``pick_weights``), in order of preference:

1. full-precision safetensors (``model.safetensors`` / ``diffusion_pytorch_model.safetensors``,
   or their shards with the index);
2. the ``fp16`` variant (``*.fp16.safetensors``). The openai repos have fp32 weights only as
   pickles, so in practice this is what is used for the prior and the CLIP encoders (half the
   download). Loaded with ``torch_dtype``/``dtype=torch.float32`` the fp16 values are up-cast
   exactly; the only loss is the fp16 rounding of the stored weights;
3. a pickled ``.bin``, and only for the components in ``PICKLE_ALLOWED``: the renderer exists on
   the hub only as a .bin (it also carries the marching-cubes table), and the image encoder's hub
   files could not be checked from here, so a missing safetensors file must not make image mode
   unusable. diffusers and transformers read those with ``torch.load(weights_only=True)``. The
   prior and the text encoder have safetensors on the hub: pickles are refused for them.

Components without weights need their configuration files (``CONFIG_ONLY``).

Nothing here imports torch: the download and the CLI's ``download`` command use it without.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import MODEL_UNAVAILABLE, ShapEError
from .files import is_dir

COMPONENTS: dict[str, tuple[str, ...]] = {
    "text": ("prior", "text_encoder", "tokenizer", "scheduler", "shap_e_renderer"),
    "image": ("prior", "image_encoder", "image_processor", "scheduler", "shap_e_renderer"),
    "renderer": ("shap_e_renderer",),
}
PICKLE_ALLOWED = ("shap_e_renderer", "image_encoder")

# Components without weights: (files all required, alternatives of which one set is required).
# A slow CLIP tokenizer needs vocab.json and merges.txt; a fast one can do with tokenizer.json.
CONFIG_ONLY: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "scheduler": (("scheduler_config.json",), ()),
    "image_processor": (("preprocessor_config.json",), ()),
    "tokenizer": (("tokenizer_config.json",), (("vocab.json", "merges.txt"), ("tokenizer.json",))),
}

# Approximate parameter counts (DESIGN.md: diffusers 0.42 with random weights; CLIP ViT-L/14).
PARAM_COUNTS = {
    "prior": 316_000_000,
    "shap_e_renderer": 226_000_000,
    "text_encoder": 123_000_000,
    "image_encoder": 303_000_000,
}
BYTES_PER_PARAM_FP32 = 4

_SHARD = r"(?:-\d{5}-of-\d{5})?"
_SAFETENSORS = re.compile(
    rf"^(?:diffusion_pytorch_model|model)(?P<fp16>\.fp16)?{_SHARD}\.safetensors$"
)
_SAFETENSORS_INDEX = re.compile(
    r"^(?:diffusion_pytorch_model|model)\.safetensors\.index(?P<fp16>\.fp16)?\.json$"
)
_BIN = re.compile(rf"^(?:diffusion_pytorch_model|pytorch_model){_SHARD}\.bin$")
_BIN_INDEX = re.compile(r"^(?:diffusion_pytorch_model|pytorch_model)\.bin\.index\.json$")
_WEIGHT_SUFFIXES = (
    ".bin",
    ".safetensors",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".msgpack",
    ".h5",
    ".onnx",
)


@dataclass(frozen=True)
class Weights:
    """The weight files chosen for one component, and how to load them."""

    files: tuple[str, ...]  # file names inside the component folder, index files included
    variant: str | None  # the ``variant=`` for from_pretrained: "fp16" or None
    pickle: bool  # a pickled checkpoint (only for PICKLE_ALLOWED): use_safetensors=False


def components(kind: str) -> tuple[str, ...]:
    if kind not in COMPONENTS:
        raise ValueError(f"kind must be one of {sorted(COMPONENTS)}, not {kind!r}")
    return COMPONENTS[kind]


def vram_estimate(kind: str) -> int:
    """Approximate GPU memory for the weights of ``kind``, in bytes.

    Counted as fp32 weights (4 bytes a parameter), as held by a loader that keeps the weights in
    fp32 and runs fp16 through autocast: text about 2.5 GiB, image about 3.1 GiB. Activations
    come on top and are not counted here.
    """
    return sum(PARAM_COUNTS.get(c, 0) for c in components(kind)) * BYTES_PER_PARAM_FP32


def pick_weights(component: str, names: Iterable[str]) -> Weights | None:
    """The weight files to use among ``names`` (file names inside the component folder).

    None when there is nothing acceptable (see the module docstring for the order).
    """
    names = sorted(names)
    for variant in (None, "fp16"):
        files = [
            n
            for n in names
            if (m := _SAFETENSORS.match(n) or _SAFETENSORS_INDEX.match(n))
            and (m.group("fp16") is not None) == (variant is not None)
        ]
        if any(_SAFETENSORS.match(n) for n in files):
            return Weights(tuple(files), variant, pickle=False)
    if component in PICKLE_ALLOWED:
        files = [n for n in names if _BIN.match(n) or _BIN_INDEX.match(n)]
        if any(_BIN.match(n) for n in files):
            return Weights(tuple(files), None, pickle=True)
    return None


def weights_in(folder: str | Path, component: str) -> Weights | None:
    """``pick_weights`` over the files of ``folder/component``."""
    sub = Path(folder) / component
    return pick_weights(component, [p.name for p in sub.iterdir()] if sub.is_dir() else [])


def is_weight_file(name: str) -> bool:
    """A checkpoint of any format (never fetched for the components without weights)."""
    return name.endswith(_WEIGHT_SUFFIXES)


def is_weight_index(name: str) -> bool:
    """The index of sharded weights: chosen with its weights, not as a configuration file."""
    return bool(_SAFETENSORS_INDEX.match(name) or _BIN_INDEX.match(name))


def refused_pickles(component: str, names: Iterable[str]) -> list[str]:
    """The weight files among ``names`` that exist but are refused (pickles, for most)."""
    return sorted(n for n in names if is_weight_file(n)) if component not in PICKLE_ALLOWED else []


def component_problems(folder: Path, component: str) -> list[str]:
    """What ``folder/component`` lacks, as readable items; empty when it is complete."""
    sub = folder / component
    if not sub.is_dir():
        return [f"{component}/"]
    names = {p.name for p in sub.iterdir() if p.is_file()}
    if component in CONFIG_ONLY:
        required, choices = CONFIG_ONLY[component]
        problems = [f"{component}/{n}" for n in required if n not in names]
        if choices and not any(all(n in names for n in group) for group in choices):
            problems.append(f"{component}/" + " or ".join(" + ".join(g) for g in choices))
        return problems
    problems = [] if "config.json" in names else [f"{component}/config.json"]
    picked = pick_weights(component, names)
    if picked is None:
        accepted = "safetensors or .bin" if component in PICKLE_ALLOWED else "safetensors"
        pickles = refused_pickles(component, names)
        refused = f"; {', '.join(pickles)}: pickles are refused for it" if pickles else ""
        problems.append(f"{component}/ weights ({accepted}{refused})")
        return problems
    return problems + [f"{component}/{s}" for s in _missing_shards(sub, picked.files)]


def folder_problems(folder: Path, kind: str) -> list[str]:
    """What ``folder`` lacks for ``kind``, as readable items; empty when it is complete."""
    problems = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    for comp in components(kind):
        problems += component_problems(folder, comp)
    return problems


def check_folder(folder: str | Path, kind: str) -> Path:
    """``folder`` when it has all that ``kind`` needs; else ShapEError naming what is missing."""
    folder = Path(folder)
    problems = folder_problems(folder, kind)
    if problems:
        raise ShapEError(
            MODEL_UNAVAILABLE,
            f"model folder {folder} is incomplete for {kind} input: missing {', '.join(problems)}",
            "point --model at a folder saved with save_pretrained() (it holds model_index.json and "
            f"one sub-folder per component), or {kind_hint(kind)}",
            "model",
        )
    return folder


def hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The hub's cache folder, as huggingface_hub finds it (HF_HUB_CACHE, else HF_HOME/hub, else
    XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub). The worker asks
    huggingface_hub itself; this copy of its documented rule is for Blender's Python, which has no
    huggingface_hub (a worker test checks that the two agree)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def on_disk(model: str, kind: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``model`` (a folder, or a hub repo id in the hub's cache) holds everything
    ``kind`` needs, without the network or huggingface_hub: the main branch's cached snapshot
    (refs/main), as the worker's offline lookup takes it."""
    folder = Path(model).expanduser()
    if not is_dir(folder):
        if model.count("/") != 1:
            return False
        repo = hub_cache(env) / ("models--" + model.replace("/", "--"))
        try:
            revision = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return False
        folder = repo / "snapshots" / revision
    return is_dir(folder) and not folder_problems(folder, kind)


def kind_hint(kind: str) -> str:
    """Which model a kind needs, for hints."""
    if kind == "image":
        return "image input needs the image model, e.g. openai/shap-e-img2img"
    if kind == "text":
        return "text prompts need the text model, e.g. openai/shap-e"
    return "use a Shap-E repo or folder, e.g. openai/shap-e"


def _missing_shards(sub: Path, files: Iterable[str]) -> list[str]:
    missing = []
    for index in (n for n in files if n.endswith(".index.json") or ".index." in n):
        try:
            shards = set(
                json.loads((sub / index).read_text(encoding="utf-8"))["weight_map"].values()
            )
        except (OSError, ValueError, KeyError, AttributeError):
            missing.append(f"{index} (unreadable)")
            continue
        missing += sorted(s for s in shards if not (sub / s).is_file())
    return missing
