"""The weight-file rule: what the loader must pass to read what the download fetched."""

from __future__ import annotations

import pytest

from shape_e_blender.worker.models.weights import vram_estimate, weights_in


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
