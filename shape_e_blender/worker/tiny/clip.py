"""Tiny CLIP parts: a byte-level tokenizer written from a generated vocabulary, and the encoders.

The tokenizer's files are those of the hub repos (vocab.json, merges.txt), with
``model_max_length=77``: without it, transformers 5 raises OverflowError in the pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from .sizes import TinySizes

CLIP_MAX_LENGTH = 77  # without model_max_length, transformers 5 overflows in the pipeline


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


def write_tokenizer_files(target: Path) -> None:
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


def tokenizer(target: Path) -> CLIPTokenizer:
    write_tokenizer_files(target)
    return CLIPTokenizer.from_pretrained(target)


def text_encoder(sizes: TinySizes, tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
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


def vision_encoder(sizes: TinySizes) -> CLIPVisionModel:
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
