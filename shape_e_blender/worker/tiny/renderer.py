"""A random Shap-E renderer whose implicit field has smooth, closed surfaces.

A randomly initialised renderer has none (DESIGN.md, "Testing with real parts"); ``shape_renderer``
gives it some, at any size: the tiny test models' renderer and the full-size random one of
benchmarks/bench_pipeline.py.
"""

from __future__ import annotations

import math

import torch
from diffusers.pipelines.shap_e import ShapERenderer

from ..mesh.field import LatentField
from .sizes import TinySizes

POSENC_OCTAVES = 15  # MLPNeRSTFModel encodes positions with octaves 2^0 .. 2^14
KEPT_OCTAVES = 3  # octaves 2^0 .. 2^2 stay audible in the tiny renderer: smooth blobs
INSIDE_FRACTION = 0.25  # share of the [-1, 1]^3 box inside the surface for a typical latent


def tiny_renderer(sizes: TinySizes, seed: int = 0) -> ShapERenderer:
    """A random renderer of these sizes, shaped so that its field has surfaces."""
    return shape_renderer(_renderer(sizes), seed)


def _renderer(sizes: TinySizes) -> ShapERenderer:
    h = sizes.renderer_hidden
    d_posenc = 3 + 2 * 3 * POSENC_OCTAVES  # 93, as in the released renderer
    return ShapERenderer(
        param_shapes=((h, d_posenc), (h, h), (h, h), (h, h)),
        d_latent=sizes.latent_dim,
        d_hidden=h,
        n_output=12,
        n_hidden_layers=6,
        act_fn="swish",
        insert_direction_at=4,
    )


@torch.no_grad()
def shape_renderer(
    renderer: ShapERenderer, seed: int = 0, *, kept_octaves: int = KEPT_OCTAVES
) -> ShapERenderer:
    """Give a random renderer of any size a field with smooth, closed surfaces, in place.

    Used for the tiny test models and for the full-size random renderer of
    benchmarks/bench_pipeline.py (the released config, ``ShapERenderer()``).

    Measured on random renderers: the tiny field is negative everywhere, and with all 15
    positional-encoding octaves it is noise at any size. The projection writes each of the first
    four layers' weight rows through a LayerNorm over the layer's input channels, so:
    - LayerNorm gain 3/sqrt(channels) and zero biases give every weight row a norm of about 3
      whatever the latent's scale;
    - a zero gain on the first layer's posenc columns of octave >= ``kept_octaves`` silences the
      high frequencies (input layout [xyz (3), sin 3x15, cos 3x15], octave-major); fewer kept
      octaves give simpler shapes with less surface;
    - the last layer's SDF bias is shifted so that about INSIDE_FRACTION of the box is inside.
    """
    proj = renderer.params_proj
    for name, (_, channels) in zip(proj.config.param_names, proj.config.param_shapes, strict=True):
        layer = proj.projections[name.replace(".", "__")]
        layer.norm.weight.fill_(3.0 / math.sqrt(channels))
        layer.norm.bias.zero_()
        layer.proj.bias.zero_()
    first = proj.projections[proj.config.param_names[0].replace(".", "__")]
    for octave in range(kept_octaves, POSENC_OCTAVES):
        for d in range(3):
            first.norm.weight[3 + 3 * octave + d] = 0.0  # sin
            first.norm.weight[3 + 3 * POSENC_OCTAVES + 3 * octave + d] = 0.0  # cos

    # Calibrate the SDF offset on a few Gaussian latents. The LayerNorm makes the weights
    # independent of each latent row's scale, so these stand for any latent the prior samples.
    rows = sum(v for v, _ in proj.config.param_shapes)
    gen = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1.0, 1.0, 24)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    values = []
    for _ in range(8):
        latent = torch.randn(rows, proj.config.d_latent, generator=gen)
        values.append(LatentField(renderer, latent, "cpu").sdf(points))
    level = torch.quantile(torch.cat(values), 1.0 - INSIDE_FRACTION).clamp(-0.999999, 0.999999)
    last = renderer.mlp.mlp[-1]
    last.bias[0] -= torch.atanh(level)  # the SDF head is tanh(raw): shift raw by -atanh(level)
    return renderer
