"""Loading pipelines from local folders: component by component, the weight files' rule, errors."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline, ShapERenderer
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModel

from shape_e_blender.core.errors import MODEL_UNAVAILABLE, ShapEError
from shape_e_blender.worker.models.loading import (
    image_processor_class,
    load_image_pipeline,
    load_renderer,
    load_text_pipeline,
)


def _all_fp32(module: torch.nn.Module) -> bool:
    return all(p.dtype == torch.float32 for p in module.parameters())


def test_text_pipeline_loads_component_by_component(tiny_text_model: Path) -> None:
    pipe = load_text_pipeline(tiny_text_model)
    assert isinstance(pipe, ShapEPipeline)
    assert isinstance(pipe.prior, PriorTransformer)
    assert isinstance(pipe.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, HeunDiscreteScheduler)
    assert isinstance(pipe.shap_e_renderer, ShapERenderer)
    for module in (pipe.prior, pipe.text_encoder, pipe.shap_e_renderer):
        assert _all_fp32(module) and not module.training
    saved = load_file(tiny_text_model / "prior/diffusion_pytorch_model.safetensors")
    loaded = pipe.prior.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_image_pipeline_loads_with_the_pil_clip_processor(tiny_image_model: Path) -> None:
    pipe = load_image_pipeline(tiny_image_model)
    assert isinstance(pipe, ShapEImg2ImgPipeline)
    assert isinstance(pipe.image_encoder, CLIPVisionModel)
    assert type(pipe.image_processor) is image_processor_class()
    assert pipe.image_processor.crop_size == {"height": 32, "width": 32}
    assert _all_fp32(pipe.image_encoder) and _all_fp32(pipe.prior)


def test_renderer_from_the_pickled_bin_equals_the_safetensors_one(
    tiny_text_model: Path, tiny_text_model_bin: Path
) -> None:
    a = load_renderer(tiny_text_model).state_dict()
    b = load_renderer(tiny_text_model_bin).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(load_text_pipeline(tiny_text_model_bin).shap_e_renderer, ShapERenderer)


def _mapped_from(path: Path) -> list[tuple[int, int]]:
    """The address ranges this process has mapped from ``path`` (Linux: /proc/self/maps)."""
    real = str(path.resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == real:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc/self/maps")
@pytest.mark.parametrize(
    ("fixture", "weights"),
    [
        ("tiny_text_model_bin", "diffusion_pytorch_model.bin"),
        ("tiny_text_model", "diffusion_pytorch_model.safetensors"),
    ],
)
def test_renderer_weights_stay_memory_mapped_from_the_bin_as_from_safetensors(
    fixture: str, weights: str, request: pytest.FixtureRequest
) -> None:
    """Why the hub's .bin is not converted to safetensors (docs/performance.md, renderer loading).

    diffusers maps a zip-format .bin just as it maps safetensors, and the parameters point into
    the mapped file, so both load alike. If a library update changed that for the .bin, loads
    would read the whole file into memory again, and that decision would need measuring again.
    """
    folder: Path = request.getfixturevalue(fixture)
    renderer = load_renderer(folder)
    ranges = _mapped_from(folder / "shap_e_renderer" / weights)
    assert ranges, f"{weights} is not memory-mapped"
    params = list(renderer.parameters())
    outside = [p.shape for p in params if not any(lo <= p.data_ptr() < hi for lo, hi in ranges)]
    assert not outside, f"{len(outside)} of {len(params)} parameters were copied out of the file"


class _Payload:
    """Pickles as a call to Path.touch: what a malicious checkpoint could run on load."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.target,))


def _assert_payload_refused(
    load: Callable[[Path], object], folder: Path, weights: Path, state: dict, marker: Path
) -> None:
    """``weights`` rewritten as ``state`` plus a payload: loading fails and runs no code."""
    torch.save({**state, "params_proj.extra": _Payload(marker)}, weights)
    with pytest.raises(ShapEError) as err:
        load(folder)
    component = weights.parent.name
    assert err.value.code == MODEL_UNAVAILABLE and component in err.value.message
    assert not marker.exists()


def test_a_renderer_pickle_cannot_run_code_when_loaded(
    tiny_text_model_bin: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_text_model_bin, tmp_path / "model")
    weights = folder / "shap_e_renderer/diffusion_pytorch_model.bin"
    state = torch.load(weights, weights_only=True)
    _assert_payload_refused(load_renderer, folder, weights, state, tmp_path / "code-ran")


def _pickle_only(component: Path, module: torch.nn.Module, name: str) -> Path:
    """The ``component`` folder's safetensors replaced by a pickle of ``module``'s weights."""
    for weights in component.glob("*.safetensors"):
        weights.unlink()
    torch.save(module.state_dict(), component / name)
    return component / name


def test_pickles_are_refused_where_safetensors_belong(
    tiny_text_model: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    prior = load_text_pipeline(folder).prior
    assert _pickle_only(folder / "prior", prior, "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ShapEError) as err:
        load_text_pipeline(folder)
    assert err.value.code == MODEL_UNAVAILABLE
    assert "prior" in err.value.message and "pickle" in err.value.message
    assert str(folder) in err.value.message


def test_an_image_encoder_without_safetensors_loads_its_pickle_safely(
    tiny_image_model: Path, tmp_path: Path
) -> None:
    """Only where no safetensors exist, and through weights_only loading (no code runs)."""
    folder = shutil.copytree(tiny_image_model, tmp_path / "model")
    encoder = load_image_pipeline(folder).image_encoder
    weights = _pickle_only(folder / "image_encoder", encoder, "pytorch_model.bin")
    again = load_image_pipeline(folder).image_encoder
    for (name, a), (_, b) in zip(
        encoder.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # a pickle that would run code when unpickled is refused, not executed
    _assert_payload_refused(load_image_pipeline, folder, weights, {}, tmp_path / "ran")


def test_hub_style_fp16_safetensors_load_upcast_next_to_pickles(
    tiny_text_model: Path, tmp_path: Path
) -> None:
    """The hub ships prior/ and text_encoder/ as fp16-variant safetensors beside fp32 pickles."""
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    original = load_text_pipeline(folder)
    for part, model, stem, pickle in (
        ("prior", original.prior, "diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
        ("text_encoder", original.text_encoder, "model", "pytorch_model.bin"),
    ):
        (folder / part / f"{stem}.safetensors").unlink()
        state = model.state_dict()
        torch.save(state, folder / part / pickle)  # the fp32 pickle
        half = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
        save_file(half, folder / part / f"{stem}.fp16.safetensors", metadata={"format": "pt"})
    names = {p.name for p in (folder / "prior").iterdir()}
    assert names == {
        "config.json",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.safetensors",
    }
    assert (folder / "text_encoder/model.fp16.safetensors").is_file()
    assert (folder / "text_encoder/pytorch_model.bin").is_file()
    pipe = load_text_pipeline(folder)
    for loaded, source in (
        (pipe.prior, original.prior),
        (pipe.text_encoder, original.text_encoder),
    ):
        assert _all_fp32(loaded)
        want = {k: v.to(torch.float16).to(torch.float32) for k, v in source.state_dict().items()}
        got = loaded.state_dict()
        # Values come from the fp16 safetensors (rounded), not from the exact fp32 pickle.
        assert all(torch.equal(got[k], want[k]) for k in want if want[k].is_floating_point())


@pytest.mark.parametrize(
    ("remove", "component"),
    [
        ("scheduler", "scheduler"),
        ("tokenizer/tokenizer_config.json", "tokenizer"),
        ("text_encoder/model.safetensors", "text_encoder"),
        ("shap_e_renderer/diffusion_pytorch_model.safetensors", "shap_e_renderer"),
        ("prior/config.json", "prior"),
    ],
)
def test_a_missing_component_names_the_folder_and_the_component(
    tiny_text_model: Path, tmp_path: Path, remove: str, component: str
) -> None:
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ShapEError) as err:
        load_text_pipeline(folder)
    assert err.value.code == MODEL_UNAVAILABLE and err.value.field == "model"
    assert str(folder) in err.value.message and component in err.value.message
    assert err.value.hint


def test_a_missing_folder_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ShapEError) as err:
        load_image_pipeline(tmp_path / "nowhere")
    assert err.value.code == MODEL_UNAVAILABLE and "nowhere" in err.value.message


def test_damaged_weights_are_model_unavailable_with_the_cause(
    tiny_text_model: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    (folder / "prior/diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ShapEError) as err:
        load_text_pipeline(folder)
    assert err.value.code == MODEL_UNAVAILABLE and "prior" in err.value.message
    assert err.value.__cause__ is not None


@pytest.mark.parametrize("kind", ["text", "image"])
def test_a_truncated_encoder_is_model_unavailable_not_a_safetensors_traceback(
    kind: str, tiny_text_model: Path, tiny_image_model: Path, tmp_path: Path
) -> None:
    """transformers lets safetensors' own SafetensorError (an Exception only) through."""
    source, component = (
        (tiny_text_model, "text_encoder") if kind == "text" else (tiny_image_model, "image_encoder")
    )
    folder = shutil.copytree(source, tmp_path / "model")
    weights = folder / component / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    load = load_text_pipeline if kind == "text" else load_image_pipeline
    with pytest.raises(ShapEError) as err:
        load(folder)
    assert err.value.code == MODEL_UNAVAILABLE and component in err.value.message
    assert err.value.field == "model" and "download the model again" in err.value.hint
