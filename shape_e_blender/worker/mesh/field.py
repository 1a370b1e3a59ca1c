"""A latent's implicit field: signed distance and texture colour at any 3D point.

Shap-E's latent is projected (``renderer.params_proj``) into the weights of the first four layers
of a small MLP (``renderer.mlp``, an ``MLPNeRSTFModel``). diffusers' ``decode_to_mesh`` copies
those weights into the renderer in place; here they stay in this object, so one cached renderer
serves any number of latents, variants and threads and is never modified.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.pipelines.shap_e.renderer import ShapERenderer, encode_position

from ...core.errors import INVALID_PARAMS, ShapEError

# Points per MLP pass, by device type, from measurements (docs/performance.md): on this
# project's CPU the dense grid-128 points took 8.2 s in chunks of 4,096 and 12.1 s in chunks of
# 65,536, whose activations (64 MiB a layer) spill the caches. A GPU wants big batches to stay
# busy; benchmarks/gpu_check.sh times chunks up to 1,048,576 there. Fixed, not tuned at run time:
# the chunk must not depend on how busy the machine was when a job started.
CHUNK = {"cpu": 4096, "cuda": 1 << 18, "mps": 1 << 16}
# Output channels of MLPNeRSTFModel (its map_indices_to_keys): 0 = sdf, 3..5 = stf colour.
SDF_CHANNEL = slice(0, 1)
STF_CHANNELS = slice(3, 6)


def srgb_to_linear(u: torch.Tensor) -> torch.Tensor:
    """The sRGB decoding curve; the same formula diffusers applies to the stf colours."""
    return torch.where(u <= 0.04045, u / 12.92, ((u + 0.055) / 1.055) ** 2.4)


def latent_shape(renderer: ShapERenderer) -> tuple[int, int]:
    """The (rows, columns) a latent must have for this renderer: (1024, 1024) when released."""
    cfg = renderer.params_proj.config
    return (sum(int(v) for v, _ in cfg.param_shapes), int(cfg.d_latent))


class LatentField:
    """The implicit function of one latent, evaluated functionally and always in float32.

    ``sdf`` is POSITIVE INSIDE the shape: it is the renderer's tanh-squashed SDF head as is.
    diffusers and the original code both pad the grid with -1 to close meshes off, i.e. negative
    means outside. ``color`` is linear RGB in [0, 1] (the stf head predicts sRGB).
    """

    def __init__(
        self,
        renderer: ShapERenderer,
        latent: torch.Tensor,
        device: str | torch.device,
        *,
        chunk: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        # Points per MLP pass: bounds the activations at chunk x d_hidden floats per layer.
        self.chunk = chunk or CHUNK.get(self.device.type, CHUNK["cpu"])
        latent = torch.as_tensor(latent)
        if latent.ndim == 3 and latent.shape[0] == 1:
            latent = latent[0]
        expected = latent_shape(renderer)
        if tuple(latent.shape) != expected:
            raise ShapEError(
                INVALID_PARAMS,
                f"latent: shape {tuple(latent.shape)} does not fit this model's renderer, "
                f"which takes {expected}",
                "decode a latent with the model that sampled it (a latent.npy from this worker)",
                "latent",
            )
        if not torch.is_floating_point(latent) or not bool(torch.isfinite(latent).all()):
            raise ShapEError(
                INVALID_PARAMS,
                "latent: must hold finite floating-point numbers",
                "use a latent.npy written by this worker",
                "latent",
            )
        mlp = renderer.mlp
        cfg = mlp.config
        self._insert_direction_at = cfg.insert_direction_at
        proj_device = next(renderer.params_proj.parameters()).device
        # no_grad rather than inference_mode: inference tensors handed to callers would refuse
        # their in-place edits. autocast off: the renderer runs in float32 everywhere (its posenc
        # octaves reach 2^14, noise in float16), whatever region the caller is in.
        with torch.no_grad(), torch.autocast(proj_device.type, enabled=False):
            x = latent.to(device=proj_device, dtype=torch.float32)[None]
            projected = {k: v[0] for k, v in renderer.params_proj(x).items()}
            self._weights: list[torch.Tensor] = []
            self._biases: list[torch.Tensor] = []
            for i, layer in enumerate(mlp.mlp):
                weight = projected.get(f"nerstf.mlp.{i}.weight", layer.weight)
                if i == self._insert_direction_at:
                    # Without a view direction, MLPNeRSTFModel appends an all-zero direction
                    # encoding to this layer's input: those columns contribute exactly nothing,
                    # so they are dropped (a sixth of this layer's work at the released size).
                    weight = weight[:, : cfg.d_hidden]
                self._weights.append(weight.to(self.device, torch.float32).contiguous())
                self._biases.append(layer.bias.to(self.device, torch.float32).contiguous())

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points in [-1, 1]^3 -> (N,) signed distance in (-1, 1), positive inside."""
        return torch.tanh(self._evaluate(points, SDF_CHANNEL)[:, 0])

    def sdf_on_grid(self, axis: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The signed distance at grid points named by index: the returned function maps (N, 3)
        integer indices into ``axis`` (one coordinate per index) to ``sdf(axis[ijk])``, (N,).

        The same function, for less: the positional encoding of a point is a function of each
        coordinate alone, in its own columns, and the first layer is linear, so that layer's
        output is a sum of three per-axis tables of len(axis) rows, made here once. A point
        then costs the sum of three rows (``embedding_bag``) instead of 93 sines and a 93-wide
        layer: about a tenth of the MLP's time on a CPU (docs/performance.md). Only the first
        layer's order of summation differs from ``sdf`` (float32 rounding, about 1e-6).
        """
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            table = self._first_layer_tables(axis.to(self.device, torch.float32))
        offsets = torch.arange(3, device=self.device) * len(axis)
        last_w, last_b = self._weights[-1][SDF_CHANNEL], self._biases[-1][SDF_CHANNEL]

        def sdf(ijk: torch.Tensor) -> torch.Tensor:
            out = torch.empty(len(ijk), device=self.device)
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                for start in range(0, len(ijk), self.chunk):
                    index = ijk[start : start + self.chunk].to(self.device) + offsets
                    h = F.silu(F.embedding_bag(index, table, mode="sum"), inplace=True)
                    h = self._hidden(h, first=1)
                    out[start : start + len(index)] = F.linear(h, last_w, last_b)[:, 0]
            return torch.tanh(out)

        return sdf

    def _first_layer_tables(self, axis: torch.Tensor) -> torch.Tensor:
        """(3 len(axis), d_hidden): the first layer's share of each coordinate at each ``axis``
        value, x's rows first with the layer's bias, then y's, then z's."""
        # Each coordinate's columns of the encoding: those that move with it alone (x, then sin
        # and cos of 2^k x: none of them equals its value at 0 when x = 0.5).
        probe = encode_position(torch.cat([torch.zeros(1, 3), 0.5 * torch.eye(3)]).to(self.device))
        columns = probe[1:] != probe[:1]
        if not bool((columns.sum(dim=0) == 1).all()):
            raise RuntimeError(
                "diffusers' positional encoding no longer has one column set per axis"
            )
        tables = []
        for dim in range(3):
            along = torch.zeros(len(axis), 3, device=self.device)
            along[:, dim] = axis
            own = columns[dim]
            tables.append(encode_position(along)[:, own] @ self._weights[0][:, own].T)
        tables[0] += self._biases[0]
        return torch.cat(tables).contiguous()

    def color(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, 3) linear RGB in [0, 1]."""
        return srgb_to_linear(torch.sigmoid(self._evaluate(points, STF_CHANNELS)))

    def _evaluate(self, points: torch.Tensor, channels: slice) -> torch.Tensor:
        # Our own forward instead of functional_call(renderer.mlp, ...): MLPNeRSTFModel.forward
        # concatenates a zero direction encoding, computes every head and cannot compute only
        # the rows of the last layer that are asked for. Tested against it in test_field.py.
        points = torch.as_tensor(points)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), not {tuple(points.shape)}")
        last_w = self._weights[-1][channels]
        last_b = self._biases[-1][channels]
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            out = torch.empty(points.shape[0], last_w.shape[0], device=self.device)
            for start in range(0, points.shape[0], self.chunk):
                p = points[start : start + self.chunk].to(self.device, torch.float32)
                h = self._hidden(encode_position(p), first=0)
                out[start : start + p.shape[0]] = F.linear(h, last_w, last_b)
        return out

    def _hidden(self, h: torch.Tensor, first: int) -> torch.Tensor:
        """The hidden layers from ``first`` on, each a linear layer and SiLU."""
        for w, b in zip(self._weights[first:-1], self._biases[first:-1], strict=True):
            h = F.silu(F.linear(h, w, b), inplace=True)
        return h
