"""LatentField against diffusers' own decoding path, without touching the renderer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from shape_e_blender.worker.mesh.field import LatentField, latent_shape, srgb_to_linear
from shape_e_blender.worker.models.devices import DeviceChoice
from shape_e_blender.worker.models.loading import load_renderer, load_text_pipeline
from shape_e_blender.worker.sampling import sample_latents
from shape_e_blender.worker.tiny.pipeline import write_tiny_pipeline
from shape_e_blender.worker.tiny.sizes import TinySizes

CPU = DeviceChoice("cpu", "fp32")


@pytest.fixture(scope="module")
def pipe(tiny_text_model: Path):
    return load_text_pipeline(tiny_text_model)


@pytest.fixture(scope="module")
def latents(pipe) -> torch.Tensor:
    return sample_latents(
        pipe, prompt="a red chair", seeds=[0, 1], steps=8, guidance_scale=15.0, choice=CPU
    )


def _points(n: int = 5000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, generator=gen) * 2.0 - 1.0


def _diffusers_outputs(renderer, latent: torch.Tensor, points: torch.Tensor):
    """What decode_to_mesh computes: projected params copied into (a copy of) the renderer."""
    renderer = copy.deepcopy(renderer)
    with torch.no_grad():
        projected = renderer.params_proj(latent[None])
        for name, param in renderer.mlp.state_dict().items():
            if f"nerstf.{name}" in projected:
                param.copy_(projected[f"nerstf.{name}"].squeeze(0))
        out = renderer.mlp(
            position=points[None], direction=None, ts=None, nerf_level="fine", rendering_mode="stf"
        )
    return out.signed_distance[0, :, 0], out.channels[0]


def _state(renderer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in renderer.state_dict().items()}


def test_sdf_and_color_equal_diffusers_decoding(pipe, latents) -> None:
    renderer = pipe.shap_e_renderer
    points = _points()
    for latent in latents:
        field = LatentField(renderer, latent, "cpu")
        want_sdf, want_stf = _diffusers_outputs(renderer, latent, points)
        sdf, color = field.sdf(points), field.color(points)
        assert sdf.shape == (len(points),) and color.shape == (len(points), 3)
        assert sdf.dtype == color.dtype == torch.float32
        torch.testing.assert_close(sdf, want_sdf, atol=1e-5, rtol=0)
        # diffusers converts the stf head's sRGB to linear before returning vertex colours.
        torch.testing.assert_close(color, srgb_to_linear(want_stf), atol=1e-5, rtol=0)


def test_sdf_on_grid_is_diffusers_signed_distance_at_the_grid_points(pipe, latents) -> None:
    """Asked by grid index (a per-axis first layer), chunked or under an outer autocast, the
    signed distance is still diffusers' at those points."""
    renderer = pipe.shap_e_renderer
    axis = torch.linspace(-1.0, 1.0, 37)
    ijk = torch.cartesian_prod(*[torch.arange(37)] * 3)[::5]
    for latent in latents:
        want, _ = _diffusers_outputs(renderer, latent, axis[ijk])
        field = LatentField(renderer, latent, "cpu")
        got = field.sdf_on_grid(axis)(ijk)
        assert got.shape == (len(ijk),) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(got, field.sdf(axis[ijk]), atol=1e-5, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            chunked = LatentField(renderer, latent, "cpu", chunk=7).sdf_on_grid(axis)(ijk)
        torch.testing.assert_close(chunked, got, atol=1e-6, rtol=0)
    assert field.sdf_on_grid(axis)(ijk[:0]).shape == (0,)


def test_sdf_is_positive_inside_with_diffusers_sign(pipe, latents) -> None:
    """Same sign as the signed_distance diffusers meshes, whose padding -1 means outside."""
    points = _points()
    field = LatentField(pipe.shap_e_renderer, latents[0], "cpu")
    want, _ = _diffusers_outputs(pipe.shap_e_renderer, latents[0], points)
    sdf = field.sdf(points)
    assert (sdf > 0).any() and (sdf < 0).any()
    assert torch.equal(sdf > 0, want > 0)


def test_color_is_linear_rgb_from_the_sigmoid_of_the_stf_head(pipe, latents) -> None:
    renderer = pipe.shap_e_renderer
    points = _points(2000)
    field = LatentField(renderer, latents[1], "cpu")
    _, srgb = _diffusers_outputs(renderer, latents[1], points)
    # the sRGB decoding curve written out independently
    linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    color = field.color(points)
    torch.testing.assert_close(color, linear, atol=1e-5, rtol=0)
    assert color.min() >= 0.0 and color.max() <= 1.0
    assert (color < srgb - 1e-3).any()  # linear values sit below their sRGB encoding


def test_the_renderer_is_never_modified(pipe, latents) -> None:
    renderer = pipe.shap_e_renderer
    before = _state(renderer)
    for latent in latents:
        field = LatentField(renderer, latent, "cpu")
        field.sdf(_points(1000))
        field.color(_points(1000))
    after = renderer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_two_fields_on_one_renderer_stay_independent(pipe, latents) -> None:
    renderer = pipe.shap_e_renderer
    points = _points(1000)
    first = LatentField(renderer, latents[0], "cpu")
    alone = first.sdf(points)
    second = LatentField(renderer, latents[1], "cpu")
    assert not torch.allclose(second.sdf(points), alone)
    assert torch.equal(first.sdf(points), alone)


def test_chunking_and_an_outer_autocast_change_nothing(pipe, latents) -> None:
    renderer = pipe.shap_e_renderer
    points = _points(3000)
    whole = LatentField(renderer, latents[0], "cpu").sdf(points)
    torch.testing.assert_close(
        LatentField(renderer, latents[0], "cpu", chunk=7).sdf(points), whole, atol=1e-6, rtol=0
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = LatentField(renderer, latents[0], "cpu")
        low = inside.sdf(points)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, whole, atol=1e-6, rtol=0)


def test_latent_layouts_accepted_and_refused(pipe, latents) -> None:
    renderer = pipe.shap_e_renderer
    rows, cols = latent_shape(renderer)
    assert (rows, cols) == TinySizes().latent_shape
    points = _points(100)
    # (1, rows, cols), float64 and numpy-backed latents are all fine
    flat = LatentField(renderer, latents[0], "cpu").sdf(points)
    batched = LatentField(renderer, latents[0][None].double(), "cpu").sdf(points)
    from_numpy = LatentField(renderer, torch.from_numpy(latents[0].numpy()), "cpu").sdf(points)
    torch.testing.assert_close(batched, flat, atol=1e-6, rtol=0)
    assert torch.equal(from_numpy, flat)

    for bad in (latents, latents[0][:, :-1], latents[0].T[: rows - 1]):
        with pytest.raises(ShapEError) as err:
            LatentField(renderer, bad, "cpu")
        assert err.value.code == INVALID_PARAMS and err.value.field == "latent"
        assert str((rows, cols)) in err.value.message and err.value.hint
    broken = latents[0].clone()
    broken[3, 4] = float("nan")
    with pytest.raises(ShapEError) as err:
        LatentField(renderer, broken, "cpu")
    assert err.value.field == "latent" and "finite" in err.value.message


def test_a_latent_from_another_model_size_is_refused(pipe, tmp_path: Path) -> None:
    other = load_renderer(write_tiny_pipeline(tmp_path, sizes=TinySizes.other()))
    latent = torch.zeros(latent_shape(other))
    with pytest.raises(ShapEError) as err:
        LatentField(pipe.shap_e_renderer, latent, "cpu")
    assert err.value.code == INVALID_PARAMS and "does not fit" in err.value.message
    LatentField(other, latent + 0.5, "cpu").sdf(_points(10))


def test_points_must_be_n_by_3(pipe, latents) -> None:
    field = LatentField(pipe.shap_e_renderer, latents[0], "cpu")
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        field.sdf(torch.zeros(10, 2))
    assert field.sdf(torch.zeros(0, 3)).shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_field_on_the_gpu_matches_the_cpu(pipe, latents) -> None:
    points = _points()
    cpu = LatentField(pipe.shap_e_renderer, latents[0], "cpu")
    gpu_renderer = copy.deepcopy(pipe.shap_e_renderer).to("cuda")
    gpu = LatentField(gpu_renderer, latents[0], "cuda")
    torch.testing.assert_close(gpu.sdf(points).cpu(), cpu.sdf(points), atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.color(points).cpu(), cpu.color(points), atol=1e-4, rtol=0)
    axis, ijk = torch.linspace(-1.0, 1.0, 33), torch.randint(0, 33, (5000, 3))
    on_gpu = gpu.sdf_on_grid(axis.cuda())(ijk.cuda()).cpu()
    torch.testing.assert_close(on_gpu, cpu.sdf_on_grid(axis)(ijk), atol=1e-4, rtol=0)
