"""Sampling Shap-E latents through diffusers, with exact progress, cancellation and precision.

diffusers' pipelines have no step callback, so everything here hangs on module hooks: a forward
pre-hook on the prior runs once before each prior call (2 * steps - 1 for Heun), which gives
exact progress and a place to stop between calls. Hooks and wrapped forwards are always removed
again, so a cached pipeline can be reused after an error or a cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import PIL.Image
import torch
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline

from ..core.errors import ShapEError, cancelled
from .models.devices import DeviceChoice, map_runtime_error

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def prior_calls(pipe: ShapEPipeline | ShapEImg2ImgPipeline, steps: int) -> int:
    """How many times the prior runs for ``steps`` steps (2 * steps - 1 for Heun).

    Counted on a fresh scheduler built from the pipeline's config, so the pipeline's own
    scheduler state is left alone and another scheduler class would still be counted right.
    """
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device="cpu")
    return len(scheduler.timesteps)


def sample_latents(
    pipe: ShapEPipeline | ShapEImg2ImgPipeline,
    *,
    prompt: str | None = None,
    image: PIL.Image.Image | None = None,
    seeds: list[int],
    steps: int,
    guidance_scale: float,
    choice: DeviceChoice,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Sample one latent per seed: (len(seeds), rows, cols) float32 on the cpu.

    Variant i is drawn from its own cpu generator seeded with ``seeds[i]``, so any variant run
    alone with its seed gives the same latent. Progress: ("encoding", 0, 1), ("encoding", 1, 1),
    then ("sampling", k, total) after each prior call, k = 1 .. total. ``should_cancel`` is
    asked before the encoder and before each prior call; when it answers True the run stops
    with ShapEError(CANCELLED).
    """
    text = isinstance(pipe, ShapEPipeline)
    if text and (prompt is None or image is not None):
        raise ValueError("a text pipeline samples from a prompt, not an image")
    if not text and (image is None or prompt is not None):
        raise ValueError("an image pipeline samples from an image, not a prompt")
    if not seeds:
        raise ValueError("seeds must name at least one variant")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if pipe.device.type != choice.device_type:
        raise ValueError(f"the pipeline is on {pipe.device}, not on {choice.device}")

    encoder = pipe.text_encoder if text else pipe.image_encoder
    total = prior_calls(pipe, steps)
    done = 0
    report: Progress = progress or (lambda stage, step, total: None)

    def check_cancel(*_: Any) -> None:
        if should_cancel is not None and should_cancel():
            raise cancelled()

    def before_encoder(*_: Any) -> None:
        check_cancel()
        report("encoding", 0, 1)

    def after_encoder(*_: Any) -> None:
        report("encoding", 1, 1)

    def after_prior(*_: Any) -> None:
        nonlocal done
        done += 1
        report("sampling", done, total)

    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    condition: Any = prompt if text else image
    try:
        with (
            _hooked(encoder, before_encoder, after_encoder),
            _hooked(pipe.prior, check_cancel, after_prior),
            _autocast(encoder, choice),
            _autocast(pipe.prior, choice),
        ):
            out = pipe(
                condition,
                num_images_per_prompt=len(seeds),
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                generator=generators,
                output_type="latent",
            )
    except ShapEError:
        raise
    except Exception as exc:
        mapped = map_runtime_error(exc, "sampling")
        if mapped is None:
            raise
        raise mapped from exc
    if done != total:  # the hook count and the scheduler must agree, or progress lies
        log.warning("the prior ran %d times, expected %d", done, total)
    return out.images.detach().to("cpu", torch.float32)


@contextmanager
def _hooked(
    module: torch.nn.Module, before: Callable[..., None], after: Callable[..., None]
) -> Iterator[None]:
    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _autocast(module: torch.nn.Module, choice: DeviceChoice) -> Iterator[None]:
    """Run ``module`` under autocast and hand its floating outputs back as float32.

    Wrapping the whole pipeline call in autocast would not do: diffusers draws the initial
    noise in the encoder output's dtype and keeps the Heun state (latents, derivatives, the
    guidance mix) in it, so the sampler would run in half precision. Here only the prior's and
    the encoder's own computations are lowered, as the original Shap-E code does; the weights
    stay float32 and the sampler state stays float32.
    """
    if choice.precision == "fp32":
        yield
        return
    own = module.__dict__.get("forward")  # an instance forward someone else installed
    inner = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(choice.device_type, dtype=choice.dtype):
            out = inner(*args, **kwargs)
        return _float32(out)

    module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own  # type: ignore[method-assign]


def _float32(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        # transformers' ModelOutput and diffusers' BaseOutput are ordered dicts whose item
        # assignment also sets the attribute the pipelines read (.text_embeds, ...).
        for key in list(obj.keys()):
            obj[key] = _float32(obj[key])
        return obj
    if isinstance(obj, tuple):
        return tuple(_float32(x) for x in obj)
    return obj
