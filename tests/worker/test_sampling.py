"""Sampling latents: exact progress, per-variant seeds, cancellation, precision, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shape_e_blender.core.errors import CANCELLED, ShapEError
from shape_e_blender.worker.models.devices import DeviceChoice
from shape_e_blender.worker.models.loading import load_image_pipeline, load_text_pipeline
from shape_e_blender.worker.sampling import prior_calls, sample_latents
from shape_e_blender.worker.tiny.sizes import TinySizes

CPU = DeviceChoice("cpu", "fp32")
ROWS_COLS = TinySizes().latent_shape


@pytest.fixture(scope="module")
def text_pipe(tiny_text_model: Path):
    return load_text_pipeline(tiny_text_model)


@pytest.fixture(scope="module")
def image_pipe(tiny_image_model: Path):
    return load_image_pipeline(tiny_image_model)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))


def _clean(pipe) -> bool:
    """No hook or wrapped forward of ours is left on the pipeline's modules."""
    modules = [
        pipe.prior,
        getattr(pipe, "text_encoder", None),
        getattr(pipe, "image_encoder", None),
    ]
    return all(
        not m._forward_pre_hooks and not m._forward_hooks and "forward" not in m.__dict__
        for m in modules
        if m is not None
    )


@pytest.mark.parametrize("steps", [1, 2, 5, 64])
def test_prior_calls_is_two_steps_minus_one_for_heun(text_pipe, steps: int) -> None:
    assert prior_calls(text_pipe, steps) == 2 * steps - 1


def test_prior_calls_leaves_the_pipeline_scheduler_alone(text_pipe) -> None:
    text_pipe.scheduler.set_timesteps(3)
    before = text_pipe.scheduler.timesteps.clone()
    prior_calls(text_pipe, 40)
    assert torch.equal(text_pipe.scheduler.timesteps, before)


@contextmanager
def _prior_calls_counted(pipe, *, before: bool) -> Iterator[list[int]]:
    """The prior's calls so far, counted by a hook of the test's own (before or after each)."""
    calls: list[int] = []
    register = pipe.prior.register_forward_pre_hook if before else pipe.prior.register_forward_hook
    handle = register(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def _sample_text(pipe, prompt: str, seeds: list[int], steps: int, **kwargs) -> torch.Tensor:
    """Text sampling at the text model's guidance, in fp32 on the cpu."""
    return sample_latents(
        pipe, prompt=prompt, seeds=seeds, steps=steps, guidance_scale=15.0, choice=CPU, **kwargs
    )


def test_progress_is_exact_one_notification_per_prior_call(text_pipe) -> None:
    events: list[tuple[str, int, int]] = []
    with _prior_calls_counted(text_pipe, before=True) as calls:
        latents = _sample_text(
            text_pipe, "a red chair", [0], 5, progress=lambda *e: events.append(e)
        )
    assert events[:2] == [("encoding", 0, 1), ("encoding", 1, 1)]
    assert events[2:] == [("sampling", k, 9) for k in range(1, 10)]
    assert len(calls) == 9
    assert latents.shape == (1, *ROWS_COLS)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu"
    assert _clean(text_pipe)


def test_each_variant_reproduces_alone_with_its_seed_text(text_pipe) -> None:
    both = sample_latents(
        text_pipe, prompt="a chair", seeds=[5, 6], steps=6, guidance_scale=15.0, choice=CPU
    )
    alone = sample_latents(
        text_pipe, prompt="a chair", seeds=[6], steps=6, guidance_scale=15.0, choice=CPU
    )
    assert both.shape == (2, *ROWS_COLS)
    # Batched and single matmuls round differently; guidance 15 amplifies that to ~3e-5 here,
    # against ~0.5 between seeds.
    torch.testing.assert_close(both[1], alone[0], atol=1e-4, rtol=0)
    assert (both[0] - both[1]).abs().mean() > 0.1 * both.abs().mean()


def test_each_variant_reproduces_alone_with_its_seed_image(image_pipe, picture) -> None:
    both = sample_latents(
        image_pipe, image=picture, seeds=[5, 6], steps=6, guidance_scale=3.0, choice=CPU
    )
    alone = sample_latents(
        image_pipe, image=picture, seeds=[6], steps=6, guidance_scale=3.0, choice=CPU
    )
    assert both.shape == (2, *ROWS_COLS)
    torch.testing.assert_close(both[1], alone[0], atol=1e-4, rtol=0)
    # One image, repeated embedding: the variants still differ through their seeds.
    assert (both[0] - both[1]).abs().mean() > 0.1 * both.abs().mean()
    assert _clean(image_pipe)


def test_guidance_and_steps_are_passed_not_the_pipeline_defaults(text_pipe) -> None:
    def run(steps: int, guidance: float) -> torch.Tensor:
        return sample_latents(
            text_pipe, prompt="a lamp", seeds=[2], steps=steps, guidance_scale=guidance, choice=CPU
        )

    direct = text_pipe(
        "a lamp",
        num_inference_steps=3,
        guidance_scale=7.0,
        generator=[torch.Generator().manual_seed(2)],
        output_type="latent",
    ).images
    torch.testing.assert_close(run(3, 7.0), direct, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(run(3, 4.0), direct)  # 4.0 is the pipeline's default guidance


def test_cancel_stops_before_the_next_prior_call_and_leaves_the_pipeline_reusable(
    text_pipe, tiny_text_model: Path
) -> None:
    events: list[tuple[str, int, int]] = []
    with _prior_calls_counted(text_pipe, before=False) as calls, pytest.raises(ShapEError) as err:
        _sample_text(
            text_pipe,
            "a boat",
            [9],
            8,
            progress=lambda *e: events.append(e),
            # asked before each prior call: True before call 3
            should_cancel=lambda: len(calls) >= 2,
        )
    assert err.value.code == CANCELLED and err.value.message == "cancelled" and err.value.hint
    assert len(calls) == 2
    assert [e for e in events if e[0] == "sampling"] == [("sampling", 1, 15), ("sampling", 2, 15)]
    assert _clean(text_pipe)

    again = _sample_text(text_pipe, "a boat", [9], 8)
    fresh = _sample_text(load_text_pipeline(tiny_text_model), "a boat", [9], 8)
    assert torch.equal(again, fresh)


def test_cancel_before_encoding_runs_nothing(image_pipe, picture) -> None:
    events: list[tuple[str, int, int]] = []
    with pytest.raises(ShapEError) as err:
        sample_latents(
            image_pipe,
            image=picture,
            seeds=[0],
            steps=4,
            guidance_scale=3.0,
            choice=CPU,
            progress=lambda *e: events.append(e),
            should_cancel=lambda: True,
        )
    assert err.value.code == CANCELLED and events == []
    assert _clean(image_pipe)


def test_an_error_inside_the_run_propagates_and_the_hooks_are_removed(text_pipe) -> None:
    def progress(stage: str, step: int, total: int) -> None:
        if stage == "sampling" and step == 3:
            raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError, match="the client went away"):
        sample_latents(
            text_pipe,
            prompt="a cup",
            seeds=[0],
            steps=4,
            guidance_scale=15.0,
            choice=DeviceChoice("cpu", "bf16"),
            progress=progress,
        )
    assert _clean(text_pipe)


@pytest.mark.parametrize("kind", ["text", "image"])
def test_bf16_autocast_lowers_the_networks_but_keeps_the_sampler_in_fp32(
    kind: str, text_pipe, image_pipe, picture
) -> None:
    pipe = text_pipe if kind == "text" else image_pipe
    condition = {"prompt": "a red chair"} if kind == "text" else {"image": picture}
    guidance = 15.0 if kind == "text" else 3.0
    sampler_dtypes: set[torch.dtype] = set()
    inner_dtypes: set[torch.dtype] = set()

    def before_prior(module, args, kwargs) -> None:
        # the prior's input is the scaled Heun state; the scheduler keeps the rest
        sampler_dtypes.add(kwargs.get("hidden_states", args[0] if args else None).dtype)
        for name in ("prev_derivative", "sample"):
            value = getattr(pipe.scheduler, name, None)
            if value is not None:
                sampler_dtypes.add(value.dtype)

    handles = [
        pipe.prior.register_forward_pre_hook(before_prior, with_kwargs=True),
        pipe.prior.proj_to_clip_embeddings.register_forward_hook(
            lambda m, a, out: inner_dtypes.add(out.dtype)
        ),
    ]
    try:
        low = sample_latents(
            pipe,
            **condition,
            seeds=[3],
            steps=16,
            guidance_scale=guidance,
            choice=DeviceChoice("cpu", "bf16"),
        )
    finally:
        for h in handles:
            h.remove()
    assert inner_dtypes == {torch.bfloat16}  # autocast really ran inside the prior
    assert sampler_dtypes == {torch.float32}
    assert low.dtype == torch.float32
    assert _clean(pipe)
    assert all(p.dtype == torch.float32 for p in pipe.prior.parameters())

    full = sample_latents(
        pipe, **condition, seeds=[3], steps=16, guidance_scale=guidance, choice=CPU
    )
    other_seed = sample_latents(
        pipe, **condition, seeds=[4], steps=16, guidance_scale=guidance, choice=CPU
    )
    drift = (low - full).abs().mean()
    spread = (other_seed - full).abs().mean()
    assert 0 < drift < 0.2 * spread, (float(drift), float(spread))


def test_the_wrong_condition_for_the_pipeline_is_refused(text_pipe, image_pipe, picture) -> None:
    with pytest.raises(ValueError, match="prompt"):
        sample_latents(text_pipe, image=picture, seeds=[0], steps=1, guidance_scale=1, choice=CPU)
    with pytest.raises(ValueError, match="image"):
        sample_latents(image_pipe, prompt="x", seeds=[0], steps=1, guidance_scale=1, choice=CPU)
    with pytest.raises(ValueError, match="seeds"):
        sample_latents(text_pipe, prompt="x", seeds=[], steps=1, guidance_scale=1, choice=CPU)
