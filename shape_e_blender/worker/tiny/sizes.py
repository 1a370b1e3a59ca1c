"""The sizes of a tiny pipeline: two presets, so that nothing depends on one set of numbers."""

from __future__ import annotations

from dataclasses import dataclass


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


DEFAULT = TinySizes()
