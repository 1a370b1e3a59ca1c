"""Tiny random Shap-E pipelines, written offline in the layout of the hub repos.

They load through exactly the same code as the real weights (worker/models/loading.py), so
tests and offline runs exercise the real loading, sampling and decoding paths in seconds. The
weights are random, but the renderer is shaped so that its implicit field has smooth surfaces
(see ``renderer.shape_renderer``): a randomly initialised renderer has none.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer
from diffusers.pipelines.shap_e import ShapEImg2ImgPipeline, ShapEPipeline

from ...core.weights import COMPONENTS
from ..models.loading import image_processor_class, quiet_progress_bars
from . import clip
from .renderer import tiny_renderer
from .sizes import DEFAULT, TinySizes

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


def write_tiny_pipeline(
    folder: str | Path,
    kind: Literal["text", "image"] = "text",
    *,
    seed: int = 0,
    sizes: TinySizes = DEFAULT,
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
    for name in {name for names in COMPONENTS.values() for name in names}:
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)

    # fork_rng: building the tiny model must not disturb the caller's global RNG. Each part
    # draws from its own seed, so the text and image pipelines of one seed share prior sizes
    # and renderer weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        renderer = tiny_renderer(sizes, seed)
        if kind == "text":
            tokens = clip.tokenizer(folder / "tokenizer")
            torch.manual_seed(seed + 1)
            condition = {"text_encoder": clip.text_encoder(sizes, tokens), "tokenizer": tokens}
        else:
            torch.manual_seed(seed + 1)
            condition = {
                "image_encoder": clip.vision_encoder(sizes),
                "image_processor": image_processor_class()(
                    size={"shortest_edge": sizes.image_size},
                    crop_size={"height": sizes.image_size, "width": sizes.image_size},
                ),
            }
        torch.manual_seed(seed + 2)
        pipeline = ShapEPipeline if kind == "text" else ShapEImg2ImgPipeline
        pipe = pipeline(
            prior=_prior(sizes, image=kind == "image"),
            scheduler=HeunDiscreteScheduler(**SCHEDULER_CONFIG),
            shap_e_renderer=renderer,
            **condition,
        )
        pipe.save_pretrained(folder, safe_serialization=True)

    if kind == "text":
        # transformers 5 saves only tokenizer.json; the hub repos have vocab.json + merges.txt,
        # and that is the path the real weights load through.
        clip.write_tokenizer_files(folder / "tokenizer")
    if renderer_format == "bin":
        target = folder / "shap_e_renderer"
        (target / "diffusion_pytorch_model.safetensors").unlink()
        renderer.save_pretrained(target, safe_serialization=False)
    return folder


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
