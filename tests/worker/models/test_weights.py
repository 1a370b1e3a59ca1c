"""The weight-file rule: what the loader must pass to read what the download fetched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shape_e_blender.core.errors import MODEL_UNAVAILABLE, ShapEError
from shape_e_blender.core.weights import (
    Weights,
    folder_problems,
    pick_weights,
    vram_estimate,
    weights_in,
)
from shape_e_blender.worker.hub.download import resolve_model
from shape_e_blender.worker.models.loading import load_text_pipeline


def test_loader_contract_for_fp16_safetensors_and_the_renderer_bin(tmp_path):
    """The variant the weight rule reports loads with from_pretrained, up-cast to fp32."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    from diffusers.pipelines.shap_e.renderer import ShapERenderer

    torch.manual_seed(0)
    folder = tmp_path / "model"
    prior = diffusers.PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=1,
        embedding_dim=8,
        num_embeddings=4,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
        clip_embed_dim=16,
    ).half()
    prior.save_pretrained(folder / "prior", variant="fp16")
    text = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            projection_dim=8,
            vocab_size=64,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).half()
    text.save_pretrained(folder / "text_encoder", variant="fp16")
    renderer = ShapERenderer(
        param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)), d_latent=16, d_hidden=8, n_hidden_layers=6
    )
    renderer.save_pretrained(folder / "shap_e_renderer", safe_serialization=False)
    names = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*.*") if "weights" not in p.name
    }
    assert {
        "prior/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
    } <= names

    assert weights_in(folder, "prior").variant == "fp16"
    assert weights_in(folder, "text_encoder").variant == "fp16"
    assert weights_in(folder, "shap_e_renderer").variant is None

    p2 = diffusers.PriorTransformer.from_pretrained(
        folder,
        subfolder="prior",
        variant=weights_in(folder, "prior").variant,
        use_safetensors=True,
        torch_dtype=torch.float32,
    )
    t2 = transformers.CLIPTextModelWithProjection.from_pretrained(
        folder,
        subfolder="text_encoder",
        variant=weights_in(folder, "text_encoder").variant,
        use_safetensors=True,
        dtype=torch.float32,  # transformers 5 would keep the checkpoint's fp16 otherwise
    )
    r2 = ShapERenderer.from_pretrained(folder, subfolder="shap_e_renderer")
    for before, after in ((prior, p2), (text, t2), (renderer, r2)):
        for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True):
            assert b.dtype == (torch.float32 if a.is_floating_point() else a.dtype)
            assert torch.equal(a.to(b.dtype), b)


def test_vram_estimate_follows_the_parameter_counts():
    assert vram_estimate("text") == (316 + 123 + 226) * 10**6 * 4
    assert vram_estimate("image") == (316 + 303 + 226) * 10**6 * 4
    assert vram_estimate("renderer") == 226 * 10**6 * 4


@pytest.mark.parametrize(
    ("names", "component", "files", "variant", "pickle"),
    [
        (
            ["model.safetensors", "model.fp16.safetensors", "pytorch_model.bin"],
            "text_encoder",
            ("model.safetensors",),
            None,
            False,
        ),
        (
            ["model.fp16.safetensors", "pytorch_model.bin"],
            "text_encoder",
            ("model.fp16.safetensors",),
            "fp16",
            False,
        ),
        (
            ["diffusion_pytorch_model.bin"],
            "shap_e_renderer",
            ("diffusion_pytorch_model.bin",),
            None,
            True,
        ),
        (["pytorch_model.bin"], "image_encoder", ("pytorch_model.bin",), None, True),
    ],
)
def test_weights_are_picked_safetensors_first_then_fp16_then_an_allowed_pickle(
    names: list[str], component: str, files: tuple[str, ...], variant: str | None, pickle: bool
) -> None:
    assert pick_weights(component, names) == Weights(files, variant, pickle)


@pytest.mark.parametrize("component", ["prior", "text_encoder"])
def test_no_pickle_is_picked_where_the_hub_has_safetensors(component: str) -> None:
    names = ["diffusion_pytorch_model.bin", "pytorch_model.bin", "config.json"]
    assert pick_weights(component, names) is None


def test_the_download_and_the_loader_agree_on_what_a_folder_lacks(
    tiny_text_model: Path, tmp_path: Path
) -> None:
    """One rule: a folder the loader cannot use is not taken for a complete download either."""
    folder = shutil.copytree(tiny_text_model, tmp_path / "model")
    (folder / "tokenizer" / "tokenizer_config.json").unlink()
    assert folder_problems(folder, "text") == ["tokenizer/tokenizer_config.json"]
    for load in (
        lambda: resolve_model(str(folder), kind="text"),
        lambda: load_text_pipeline(folder),
    ):
        with pytest.raises(ShapEError) as err:
            load()
        assert err.value.code == MODEL_UNAVAILABLE and err.value.field == "model"
        assert "tokenizer/tokenizer_config.json" in err.value.message
