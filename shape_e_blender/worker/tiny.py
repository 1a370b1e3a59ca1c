"""Tiny random Shap-E pipelines, written offline in the layout of the hub repos.

They load through exactly the same code as the real weights (worker/models.py), so tests and
offline runs exercise the real loading, sampling and decoding paths in seconds. The weights are
random, but the renderer is shaped so that its implicit field has smooth surfaces (see
``shape_renderer``): a randomly initialised renderer has none.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline, ShapERenderer
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from .field import LatentField
from .models import image_processor_class, quiet_progress_bars

# The released repos' scheduler/scheduler_config.json (openai/shap-e and openai/shap-e-img2img
# carry the same one): Karras sigmas over an "exp" beta schedule, the prior predicts the clean
# sample, clipped to [-1, 1].
SCHEDULER_CONFIG = {
    "beta_schedule": "exp",
    "trained_betas": None,
    "num_train_timesteps": 1024,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "prediction_type": "sample",
    "use_karras_sigmas": True,
}

CLIP_MAX_LENGTH = 77  # without model_max_length, transformers 5 overflows in the pipeline
POSENC_OCTAVES = 15  # MLPNeRSTFModel encodes positions with octaves 2^0 .. 2^14
KEPT_OCTAVES = 3  # octaves 2^0 .. 2^2 stay audible in the tiny renderer: smooth blobs
INSIDE_FRACTION = 0.25  # share of the [-1, 1]^3 box inside the surface for a typical latent
COMPONENTS = (
    "prior",
    "text_encoder",
    "tokenizer",
    "image_encoder",
    "image_processor",
    "scheduler",
    "shap_e_renderer",
)


@dataclass(frozen=True)
class TinySizes:
    """Sizes of a tiny pipeline. With the defaults a 64-step generation samples in 1-2 s on a CPU.

    The latent is (4 * renderer_hidden, latent_dim): the renderer projects one latent row per
    output unit of the first four MLP layers. The released model uses (1024, 1024).
    """

    clip_hidden: int = 32  # CLIP hidden size, also the text projection size
    clip_layers: int = 1
    clip_heads: int = 2
    clip_intermediate: int = 64
    image_size: int = 32  # CLIP vision input, in pixels (the released model: 224)
    patch_size: int = 4  # (32 / 4)^2 = 64 patch tokens (the released model: 256)
    prior_layers: int = 1
    prior_heads: int = 2
    prior_head_dim: int = 16
    latent_dim: int = 32  # latent columns: the prior's embedding_dim, the renderer's d_latent
    renderer_hidden: int = 16  # MLP width of the renderer (d_hidden)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (4 * self.renderer_hidden, self.latent_dim)

    @classmethod
    def other(cls) -> TinySizes:
        """A second preset with different sizes everywhere, to show nothing depends on one."""
        return cls(
            clip_hidden=48,
            clip_layers=2,
            clip_heads=4,
            clip_intermediate=96,
            image_size=28,
            patch_size=7,
            prior_layers=2,
            prior_heads=4,
            prior_head_dim=8,
            latent_dim=24,
            renderer_hidden=24,
        )


def write_tiny_pipeline(
    folder: str | Path,
    kind: Literal["text", "image"] = "text",
    *,
    seed: int = 0,
    sizes: TinySizes = TinySizes(),
    renderer_format: Literal["safetensors", "bin"] = "safetensors",
) -> Path:
    """Write a tiny random pipeline into ``folder`` and return the folder.

    The layout is the hub repo's: model_index.json, prior/, text_encoder/ + tokenizer/ (text) or
    image_encoder/ + image_processor/ (image), scheduler/ and shap_e_renderer/. With
    ``renderer_format="bin"`` the renderer is a pickled diffusion_pytorch_model.bin, as on the hub.
    The same ``seed`` and ``sizes`` give the same weights. CLI: ``tiny-model DIR [--image]
    [--seed N] [--renderer-bin]``.
    """
    if kind not in ("text", "image"):
        raise ValueError(f"kind must be 'text' or 'image', not {kind!r}")
    if renderer_format not in ("safetensors", "bin"):
        raise ValueError(f"renderer_format must be 'safetensors' or 'bin', not {renderer_format!r}")
    quiet_progress_bars()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A component left from an earlier pipeline of the other kind must not linger; nothing else
    # in the folder is touched.
    for name in COMPONENTS:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)

    # fork_rng: building the tiny model must not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        renderer = shape_renderer(_renderer(sizes), seed)
        scheduler = HeunDiscreteScheduler(**SCHEDULER_CONFIG)
        if kind == "text":
            tokenizer = _tokenizer(folder / "tokenizer")
            torch.manual_seed(seed + 1)
            encoder = _text_encoder(sizes, tokenizer)
            torch.manual_seed(seed + 2)
            prior = _prior(sizes, image=False)
            pipe = ShapEPipeline(
                prior=prior,
                text_encoder=encoder,
                tokenizer=tokenizer,
                scheduler=scheduler,
                shap_e_renderer=renderer,
            )
        else:
            torch.manual_seed(seed + 1)
            vision = _vision_encoder(sizes)
            torch.manual_seed(seed + 2)
            prior = _prior(sizes, image=True)
            processor = image_processor_class()(
                size={"shortest_edge": sizes.image_size},
                crop_size={"height": sizes.image_size, "width": sizes.image_size},
            )
            pipe = ShapEImg2ImgPipeline(
                prior=prior,
                image_encoder=vision,
                image_processor=processor,
                scheduler=scheduler,
                shap_e_renderer=renderer,
            )
        pipe.save_pretrained(folder, safe_serialization=True)

    if kind == "text":
        # transformers 5 saves only tokenizer.json; the hub repos have vocab.json + merges.txt,
        # and that is the path the real weights load through.
        _write_tokenizer_files(folder / "tokenizer")
    if renderer_format == "bin":
        target = folder / "shap_e_renderer"
        (target / "diffusion_pytorch_model.safetensors").unlink()
        renderer.save_pretrained(target, safe_serialization=False)
    return folder


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


def _prior(sizes: TinySizes, *, image: bool) -> PriorTransformer:
    inner = sizes.prior_heads * sizes.prior_head_dim
    return PriorTransformer(
        num_attention_heads=sizes.prior_heads,
        attention_head_dim=sizes.prior_head_dim,
        num_layers=sizes.prior_layers,
        embedding_dim=sizes.latent_dim,
        num_embeddings=sizes.latent_shape[0],
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        # The released image prior normalises the 256 patch embeddings; the text prior takes
        # CLIP's projected text embedding as is.
        embedding_proj_norm_type="layer" if image else None,
        encoder_hid_proj_type=None,
        added_emb_type=None,
        time_embed_dim=4 * inner,
        embedding_proj_dim=sizes.clip_hidden,
        clip_embed_dim=2 * sizes.latent_dim,  # mean and variance; the pipeline keeps the mean
    )


def _vocab() -> dict[str, int]:
    # A byte-level BPE vocabulary without merges: every byte alone and as a word end, as in
    # CLIP's own vocab.json (which adds 48k merged tokens), then the two special tokens.
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def _write_tokenizer_files(target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    (target / "vocab.json").write_text(json.dumps(_vocab(), ensure_ascii=False), encoding="utf-8")
    (target / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (target / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": CLIP_MAX_LENGTH, **special}
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _tokenizer(target: Path) -> CLIPTokenizer:
    _write_tokenizer_files(target)
    return CLIPTokenizer.from_pretrained(target)


def _text_encoder(sizes: TinySizes, tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.clip_hidden,
        intermediate_size=sizes.clip_intermediate,
        projection_dim=sizes.clip_hidden,
        num_hidden_layers=sizes.clip_layers,
        num_attention_heads=sizes.clip_heads,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        # CLIP pools the hidden state at the first end-of-text token.
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config).eval()


def _vision_encoder(sizes: TinySizes) -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=sizes.clip_hidden,
        intermediate_size=sizes.clip_intermediate,
        projection_dim=sizes.clip_hidden,
        num_hidden_layers=sizes.clip_layers,
        num_attention_heads=sizes.clip_heads,
        num_channels=3,
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
    )
    return CLIPVisionModel(config).eval()
