"""The worker's pipeline at full size, with random weights: prior, decoding, one whole generation.

Builds a Shap-E text pipeline of the released sizes in memory (the same classes the real weights
load into: PriorTransformer with the released prior config, CLIP ViT-L/14's text tower, the
released scheduler config and ShapERenderer's default, released config) with random weights,
then measures, through the worker's own code:

1. the prior: milliseconds per prior call (a classifier-free-guidance batch of 2, as in the
   pipeline) for each precision, through ``sampling.sample_latents``; projected to 64 steps
   (127 calls);
2. decoding one latent: a dense grid-128 signed-distance evaluation through the same MLP (what
   diffusers' ``decode_to_mesh`` evaluates: 2.1 M points) against ``mesh.stf.extract_mesh`` at each
   grid, with field evaluations counted and the meshes' sizes;
3. one generation through ``engine.Engine`` on a saved copy of the pipeline (a folder laid out
   like the hub repo), so the engine's own timings (load, encode, sample, decode, write) are
   reported.

The renderer's random weights are shaped (``tiny.renderer.shape_renderer``) so that its field has
real surfaces; an unshaped random renderer has none and decoding would measure nothing.

    python benchmarks/bench_pipeline.py --device cpu --precision fp32,bf16 --calls 3 --grids 128
    python benchmarks/bench_pipeline.py --device cuda --precision fp32,fp16,bf16 --calls 127 \\
        --grids 128,256 --json out/pipeline.json

Run from the repository root (or anywhere: the script puts the repository on sys.path). Prints a
table; ``--json`` writes every number, rewritten after each stage so that a run cut short still
leaves what it measured.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from diffusers import HeunDiscreteScheduler, PriorTransformer  # noqa: E402
from diffusers.pipelines.shap_e import ShapEPipeline, ShapERenderer  # noqa: E402
from diffusers.pipelines.shap_e.renderer import volume_query_points  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from shape_e_blender.core.errors import ShapEError  # noqa: E402
from shape_e_blender.core.params import GenerationParams  # noqa: E402
from shape_e_blender.core.protocol import GenerateRequest  # noqa: E402
from shape_e_blender.worker.mesh.cleanup import drop_small_parts, part_count  # noqa: E402
from shape_e_blender.worker.mesh.field import LatentField, latent_shape  # noqa: E402
from shape_e_blender.worker.mesh.stf import (  # noqa: E402
    MIN_PART_FRACTION,
    coarse_stride,
    extract_mesh,
    grid_points,
)
from shape_e_blender.worker.models.devices import (  # noqa: E402
    DeviceChoice,
    resolve_device,
    versions,
)
from shape_e_blender.worker.models.loading import quiet_progress_bars  # noqa: E402
from shape_e_blender.worker.sampling import prior_calls, sample_latents  # noqa: E402
from shape_e_blender.worker.tiny.clip import CLIP_MAX_LENGTH  # noqa: E402
from shape_e_blender.worker.tiny.pipeline import SCHEDULER_CONFIG, write_tiny_pipeline  # noqa: E402
from shape_e_blender.worker.tiny.renderer import shape_renderer  # noqa: E402

# openai/shap-e prior/config.json, in the current PriorTransformer's argument names. diffusers'
# scripts/convert_shap_e_to_diffusers.py spells two of them the old way: its
# clip_embedding_dim=768 is embedding_proj_dim (CLIP's projected text embedding) and its
# out_dim=2048 is clip_embed_dim (mean and variance of each latent column).
PRIOR_CONFIG: dict[str, Any] = {
    "num_attention_heads": 16,
    "attention_head_dim": 64,
    "num_layers": 24,
    "embedding_dim": 1024,
    "num_embeddings": 1024,
    "additional_embeddings": 0,
    "time_embed_act_fn": "gelu",
    "norm_in_type": "layer",
    "embedding_proj_norm_type": None,
    "encoder_hid_proj_type": None,
    "added_emb_type": None,
    "time_embed_dim": 4096,
    "embedding_proj_dim": 768,
    "clip_embed_dim": 2048,
}

# CLIP ViT-L/14's text tower (openai/shap-e text_encoder/config.json). The vocabulary keeps
# CLIP's 49,408 rows so the parameter count is the real one; the tokenizer is the tiny model's
# byte-level one, which only ever uses the first few hundred (tokenizing costs nothing here).
CLIP_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": CLIP_MAX_LENGTH,
    "hidden_act": "quick_gelu",
}

PROMPT = "a red chair"
GUIDANCE = 15.0  # the text model's; with guidance > 1 every prior call is a batch of 2
FULL_STEPS = 64
# What the engine passes to extract_mesh; the dense baseline uses the same batches.
BATCH = {"cuda": 262_144}
CPU_BATCH = 65_536
DIFFUSERS_CHUNK = 4096  # decode_to_mesh's batch of points per MLP pass
MESHES: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # each decoding row's mesh, by method


# --- building --------------------------------------------------------------------------------


def build_pipeline(
    seed: int, tokenizer_dir: Path, kept_octaves: int, sdf_gain: float
) -> ShapEPipeline:
    """The full-size text pipeline with random weights, float32 and in eval mode, on the cpu.

    ``sdf_gain`` multiplies the renderer's raw signed-distance output: the surface (the zero
    level set) stays exactly where it is, only the field gets steeper and saturates sooner.
    """
    quiet_progress_bars()
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    prior = PriorTransformer(**PRIOR_CONFIG).eval()
    torch.manual_seed(seed + 1)
    encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            **CLIP_TEXT_CONFIG,
            bos_token_id=tokenizer.bos_token_id,
            # CLIP pools the hidden state at the first end-of-text token.
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(seed + 2)
    renderer = shape_renderer(ShapERenderer().eval(), seed, kept_octaves=kept_octaves)
    with torch.no_grad():
        head = renderer.mlp.mlp[-1]  # row 0 is the SDF, tanh-squashed (mesh.field.SDF_CHANNEL)
        head.weight[0] *= sdf_gain
        head.bias[0] *= sdf_gain
    pipe = ShapEPipeline(
        prior=prior,
        text_encoder=encoder,
        tokenizer=tokenizer,
        scheduler=HeunDiscreteScheduler(**SCHEDULER_CONFIG),
        shap_e_renderer=renderer,
    )
    quiet_progress_bars(pipe)
    return pipe


def parameter_counts(pipe: ShapEPipeline) -> dict[str, int]:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    renderer = pipe.shap_e_renderer
    return {
        "prior": count(pipe.prior),
        "text_encoder": count(pipe.text_encoder),
        "renderer": count(renderer),
        "renderer.params_proj": count(renderer.params_proj),
        "renderer.mlp": count(renderer.mlp),
    }


def save_like_the_hub(pipe: ShapEPipeline, folder: Path, tokenizer_dir: Path) -> float:
    """Write the pipeline as the hub repo is laid out; returns the bytes written (GB)."""
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves only tokenizer.json; the hub repo (and the tiny model) has vocab.json
    # and merges.txt, the files the real weights load through.
    shutil.rmtree(folder / "tokenizer")
    shutil.copytree(tokenizer_dir, folder / "tokenizer")
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9


# --- timing helpers --------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: str) -> float:
    """Peak CUDA memory allocated since the last reset; on the cpu the process's peak RSS."""
    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    import resource  # POSIX only, like this measurement

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


class AddedMemory:
    """The most memory a block added over what was in use when it began, in GiB: CUDA memory
    allocated on a GPU; on the cpu the process's peak resident set (VmHWM, reset through
    /proc/self/clear_refs, Linux) over its resident set at the start. Freed memory that the C
    allocator kept from an earlier row is handed back first (malloc_trim), or a later row would
    reuse it unseen and show less than it needs."""

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.gib = 0.0
        self._start = 0

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    def __enter__(self) -> AddedMemory:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc; the measurement is Linux's anyway
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        self._start = self._status("VmRSS")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self._status("VmHWM")
        self.gib = round((peak - self._start) / 2**30, 3)


class Counted:
    """A field callable that counts the points it was asked for and the time spent inside
    (into another Counted's totals when ``into`` is given)."""

    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], device: str, into: Counted | None = None
    ) -> None:
        self.fn = fn
        self.device = device
        self.into = into or self
        self.points = 0
        self.seconds = 0.0

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.fn(points)
        synchronize(self.device)
        self.into.seconds += time.perf_counter() - start
        self.into.points += len(points)
        return out

    def on_grid(
        self, make: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
    ) -> Callable[[torch.Tensor], Counted]:
        """``make`` (LatentField.sdf_on_grid) with the grid-index function it returns counted
        into this one's totals."""
        return lambda axis: Counted(make(axis), self.device, into=self)


# --- 1. the prior ----------------------------------------------------------------------------


def time_prior(
    pipe: ShapEPipeline, choice: DeviceChoice, steps: int, warmup_steps: int
) -> tuple[dict[str, Any], torch.Tensor]:
    """Per-call prior times through sample_latents, after ``warmup_steps`` steps of warm-up."""
    device = choice.device
    common = {"prompt": PROMPT, "seeds": [0], "guidance_scale": GUIDANCE, "choice": choice}
    if warmup_steps:
        sample_latents(pipe, steps=warmup_steps, **common)
    synchronize(device)
    reset_peak(device)
    marks: list[tuple[str, int, float]] = []

    def progress(stage: str, step: int, total: int) -> None:
        synchronize(device)  # a mark must mean the call before it has finished on the device
        marks.append((stage, step, time.perf_counter()))

    start = time.perf_counter()
    latents = sample_latents(pipe, steps=steps, progress=progress, **common)
    synchronize(device)
    wall = time.perf_counter() - start
    encoded = next(t for stage, step, t in marks if stage == "encoding" and step == 1)
    ends = [t for stage, _, t in marks if stage == "sampling"]
    calls = [b - a for a, b in zip([encoded, *ends[:-1]], ends, strict=True)]
    mean = statistics.fmean(calls)
    full_calls = prior_calls(pipe, FULL_STEPS)
    return {
        "precision": choice.precision,
        "device": device,
        "steps": steps,
        "calls": len(calls),
        "warmup_steps": warmup_steps,
        "encode_ms": round((encoded - marks[0][2]) * 1e3, 2),
        "call_ms_median": round(statistics.median(calls) * 1e3, 2),
        "call_ms_mean": round(mean * 1e3, 2),
        "call_ms_min": round(min(calls) * 1e3, 2),
        "call_ms_max": round(max(calls) * 1e3, 2),
        "sample_wall_s": round(wall, 3),
        "projected_64_steps_s": round(mean * full_calls, 2),
        "projected_calls": full_calls,
        "peak_gib": peak_gib(device),
    }, latents[0]


# --- 2. decoding -----------------------------------------------------------------------------


def surface_fraction(field: LatentField, device: str) -> float:
    """Share of a coarse 32^3 grid inside the surface: 0 or 1 means no surface to mesh."""
    return float((field.sdf(grid_points(32, device)) > 0).float().mean())


def near_zero_fraction(field: LatentField, device: str, grid: int = 128) -> float:
    """Share of a 64^3 grid where |sdf| is at most half a coarse cell's diagonal at ``grid``.

    extract_mesh refines every coarse cell with such a corner (for a field no steeper than a
    distance the surface may pass through it), so a shallow field, near zero over much of the
    box, costs more fine evaluations than a distance-like or saturated one.
    """
    half_diagonal = 0.5 * math.sqrt(3.0) * coarse_stride(grid) * 2.0 / (grid - 1)
    values = field.sdf(grid_points(64, device)).abs()
    return float((values <= half_diagonal).float().mean())


def dense_decode(field: LatentField, grid: int, device: str, batch: int) -> dict[str, Any]:
    """diffusers' decode_to_mesh way: every grid point, marching cubes, colours at the vertices.

    The same field (our LatentField, the same MLP) and batches as extract_mesh, so the rows differ
    only in which points are evaluated; diffusers' own forward also computes the unused heads.
    """
    sdf, color = Counted(field.sdf, device), Counted(field.color, device)
    reset_peak(device)
    with AddedMemory(device) as added:
        start = time.perf_counter()
        points = grid_points(grid, device)
        values = torch.cat([sdf(points[i : i + batch]) for i in range(0, len(points), batch)])
        del points
        # Padded with the outside value, as diffusers does, so shapes touching the box are closed.
        volume = np.pad(values.reshape(grid, grid, grid).cpu().numpy(), 1, constant_values=-1.0)
        del values
        verts, faces, _, _ = marching_cubes(volume, 0.0)
        del volume
        world = torch.from_numpy(((verts - 1.0) * (2.0 / (grid - 1)) - 1.0).astype(np.float32))
        world = world.to(device)
        for i in range(0, len(world), batch):
            color(world[i : i + batch])
        seconds = time.perf_counter() - start
    row = decode_record(
        f"dense {grid} (diffusers' way)", grid, sdf, color, seconds, len(verts), len(faces), device
    )
    row["added_gib"] = added.gib
    # The same small-part rule as extract_mesh's, for the agreement columns (not timed).
    faces, kept = drop_small_parts(len(verts), faces.astype(np.int64), MIN_PART_FRACTION)
    MESHES[row["method"]] = (world.cpu().numpy()[kept], faces)
    return row


def ours_decode(field: LatentField, grid: int, device: str, batch: int) -> dict[str, Any]:
    """mesh.stf.extract_mesh (coarse to fine), as the engine calls it."""
    sdf, color = Counted(field.sdf, device), Counted(field.color, device)
    reset_peak(device)
    with AddedMemory(device) as added:
        start = time.perf_counter()
        mesh = extract_mesh(
            sdf,
            color,
            grid,
            device=device,
            batch_size=batch,
            sdf_on_grid=sdf.on_grid(field.sdf_on_grid),
        )
        seconds = time.perf_counter() - start
    row = decode_record(
        f"extract_mesh {grid}",
        grid,
        sdf,
        color,
        seconds,
        mesh.vertex_count,
        mesh.face_count,
        device,
    )
    row["added_gib"] = added.gib
    MESHES[row["method"]] = (mesh.vertices, mesh.faces)
    return row


def agreement(row: dict[str, Any], dense: dict[str, Any]) -> None:
    """Add how far ``row``'s surface is from the dense one at the same grid: the symmetric mean
    distance from each mesh's vertices to the other's nearest vertex, in voxels, the largest
    such distance, and both meshes' connected parts."""
    (a, a_faces), (b, b_faces) = MESHES[row["method"]], MESHES[dense["method"]]
    forward, _ = cKDTree(b).query(a)
    backward, _ = cKDTree(a).query(b)
    voxel = 2.0 / (row["grid"] - 1)
    row["mean_distance_voxels"] = round(0.5 * (forward.mean() + backward.mean()) / voxel, 4)
    row["max_distance_voxels"] = round(max(forward.max(), backward.max()) / voxel, 3)
    row["parts"] = part_count(len(a), a_faces)
    row["dense_parts"] = part_count(len(b), b_faces)


def decode_record(
    method: str,
    grid: int,
    sdf: Counted,
    color: Counted,
    seconds: float,
    vertices: int,
    faces: int,
    device: str,
) -> dict[str, Any]:
    """One decoding row of the report (the same fields for every method)."""
    return {
        "method": method,
        "grid": grid,
        "sdf_evaluations": sdf.points,
        "color_evaluations": color.points,
        "evaluations": sdf.points + color.points,
        "field_s": round(sdf.seconds + color.seconds, 3),
        "wall_s": round(seconds, 3),
        "vertices": vertices,
        "faces": faces,
        "peak_gib": peak_gib(device),
    }


def diffusers_sdf_pass(
    renderer: ShapERenderer, latent: torch.Tensor, field: LatentField, device: str
) -> dict[str, Any]:
    """The signed-distance pass of diffusers' decode_to_mesh, as it runs it (its defaults).

    decode_to_mesh copies the projected weights into the renderer's MLP (here a copy, so the
    pipeline's renderer is left alone), then runs MLPNeRSTFModel on volume_query_points(grid 128)
    in batches of 4096, computing every head. Its marching cubes and colour pass cannot run on
    random weights (the marching-cubes table ships only inside the released weights), so this row
    is the SDF pass alone; the dense row beside it is the whole decode done the same dense way.
    """
    grid, batch = 128, 4096
    mlp = copy.deepcopy(renderer.mlp).to(device)
    proj_device = next(renderer.params_proj.parameters()).device
    sdf = Counted(
        lambda p: mlp(
            position=p[None], direction=None, ts=None, nerf_level="fine", rendering_mode="stf"
        ).signed_distance[0, :, 0],
        device,
    )
    with torch.no_grad():
        projected = renderer.params_proj(latent.to(proj_device, torch.float32)[None])
        for name, param in mlp.state_dict().items():
            if f"nerstf.{name}" in projected:
                param.copy_(projected[f"nerstf.{name}"][0])
        points = volume_query_points(renderer.volume, grid).to(device)
        # The same MLP as LatentField's: the values must agree (checked on the first batch).
        diff = float((sdf(points[:batch]) - field.sdf(points[:batch])).abs().max())
        sdf.points, sdf.seconds = 0, 0.0
        reset_peak(device)
        synchronize(device)
        start = time.perf_counter()
        for i in range(0, len(points), batch):
            sdf(points[i : i + batch])
        seconds = time.perf_counter() - start
    return {
        "method": "decode_to_mesh SDF pass only",
        "grid": grid,
        "batch_size": batch,
        "sdf_evaluations": sdf.points,
        "color_evaluations": 0,
        "evaluations": sdf.points,
        "field_s": round(sdf.seconds, 3),
        "wall_s": round(seconds, 3),
        "max_abs_diff_vs_latentfield": diff,
        "peak_gib": peak_gib(device),
    }


def time_chunks(
    renderer: ShapERenderer, latent: torch.Tensor, device: str, chunks: list[int]
) -> list[dict[str, Any]]:
    """LatentField's signed distance over the dense grid-128 points at several chunk sizes.

    The chunk bounds the points per MLP pass (LatentField's default: field.CHUNK by device);
    too small leaves a GPU idle, too large spills a CPU's caches. One call with all the
    points, so only the field's own chunking varies.
    """
    points = grid_points(128, device)
    rows = []
    for chunk in chunks:
        field = LatentField(renderer, latent, device, chunk=chunk)
        field.sdf(points[:chunk])  # warm-up at this shape
        synchronize(device)
        start = time.perf_counter()
        field.sdf(points)
        synchronize(device)
        seconds = time.perf_counter() - start
        rows.append({"chunk": chunk, "points": len(points), "s": round(seconds, 4)})
    return rows


def time_decoding(
    renderer: ShapERenderer,
    latent: torch.Tensor | None,
    device: str,
    grids: list[int],
    dense_grids: list[int],
    seed: int,
    chunks: list[int],
    keep: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """All the decoding rows; ``keep(partial)`` is called after each, so a cut run keeps some."""
    batch = BATCH.get(torch.device(device).type, CPU_BATCH)
    source = "sampled by the prior"
    field = None
    if latent is not None:
        field = LatentField(renderer, latent, device)
        inside = surface_fraction(field, device)
        if not 0.0 < inside < 1.0:
            field = None
            source = f"random: the sampled latent had no surface ({inside:.0%} inside)"
    if field is None:
        if latent is None:
            source = "random (no latent was sampled)"
        gen = torch.Generator().manual_seed(seed)
        latent = torch.randn(latent_shape(renderer), generator=gen)
        field = LatentField(renderer, latent, device)
    out: dict[str, Any] = {
        "latent": source,
        "inside_fraction_32": round(surface_fraction(field, device), 4),
        "near_zero_fraction_64": round(near_zero_fraction(field, device), 4),
        "batch_size": batch,
        "rows": [],
    }
    if chunks:
        out["field_chunks"] = time_chunks(renderer, latent, device, chunks)
        keep(out)
    runs: list[Callable[[], dict[str, Any]]] = []
    dense = bool(dense_grids)
    if dense:
        # The dense reference runs the MLP in diffusers' chunks of 4,096 points.
        dense_field = LatentField(renderer, latent, device, chunk=DIFFUSERS_CHUNK)
        runs.append(lambda: diffusers_sdf_pass(renderer, latent, field, device))
        # The ratios' base (dense 128 when asked for) runs first.
        ordered = sorted(dense_grids, key=lambda g: (g != 128, g))
        runs.extend(lambda g=g: dense_decode(dense_field, g, device, batch) for g in ordered)
    runs.extend(lambda g=grid: ours_decode(field, g, device, batch) for grid in grids)
    for run in runs:
        out["rows"].append(run())
        last = out["rows"][-1]
        same_grid = [
            r for r in out["rows"] if r["method"].startswith("dense") and r["grid"] == last["grid"]
        ]
        if last["method"].startswith("extract_mesh") and same_grid:
            agreement(last, same_grid[0])
        base = out["rows"][1 if dense and len(out["rows"]) > 1 else 0]
        for row in out["rows"]:
            row["evaluations_vs_base"] = round(row["evaluations"] / base["evaluations"], 3)
            row["time_vs_base"] = round(row["wall_s"] / base["wall_s"], 3)
        out["base"] = base["method"]
        keep(out)
    return out


# --- 3. one generation through the engine ----------------------------------------------------


def time_engine(
    folder: Path, work: Path, device: str, precision: str, steps: int, grid: int
) -> dict[str, Any]:
    from shape_e_blender.worker.engine import Engine

    engine = Engine(work / "jobs")
    params = GenerationParams(
        prompt=PROMPT,
        model=str(folder),
        seed=0,
        steps=steps,
        grid_size=grid,
        device=device,
        precision=precision,
    )
    reset_peak(device)
    start = time.perf_counter()
    try:
        result = engine.generate(GenerateRequest(params, job_dir=str(work / "job")))
    except ShapEError as err:
        return {"error": str(err), "wall_s": round(time.perf_counter() - start, 3)}
    wall = time.perf_counter() - start
    mesh = result.meshes[0]
    return {
        "device": result.params["device"],
        "precision": result.params["precision"],
        "steps": steps,
        "grid": grid,
        "timings_s": result.timings,
        "wall_s": round(wall, 3),
        "vertices": mesh.vertices if mesh.made else None,
        "faces": mesh.faces if mesh.made else None,
        "mesh_error": mesh.error.message if mesh.error else None,
        "peak_gib": peak_gib(result.params["device"]),
    }


# --- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": versions(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        out["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return out


def print_tables(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpu']} ({m['cpu_count']} cpus, {m['torch_threads']} torch threads)")
    if "gpu" in m:
        print(f"gpu: {m['gpu']} ({m['gpu_memory_gib']} GiB)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    counts = results.get("parameters", {})
    if counts:
        print("\nparameters: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in counts.items()))
    prior = results.get("prior", [])
    if prior:
        print("\nprior (CFG batch of 2 per call, through sample_latents)")
        print(
            f"{'precision':9} | {'calls':>5} | {'ms/call med':>11} | {'ms/call mean':>12} | "
            f"{'encode ms':>9} | {'64 steps (127 calls)':>20} | {'peak GiB':>8}"
        )
        for row in prior:
            if "skipped" in row:
                print(f"{row['precision']:9} | skipped: {row['skipped']}")
                continue
            print(
                f"{row['precision']:9} | {row['calls']:5d} | {row['call_ms_median']:11.1f} | "
                f"{row['call_ms_mean']:12.1f} | {row['encode_ms']:9.1f} | "
                f"{row['projected_64_steps_s']:18.1f} s | {row['peak_gib']:8.2f}"
            )
    decode = results.get("decode")
    if decode:
        print(
            f"\ndecoding one latent ({decode['latent']}; {decode['inside_fraction_32']:.0%} "
            f"inside, {decode['near_zero_fraction_64']:.0%} near zero; batch "
            f"{decode['batch_size']:,}; ratios against {decode['base']})"
        )
        for row in decode.get("field_chunks", []):
            print(
                f"  LatentField.sdf on {row['points']:,d} points, chunk {row['chunk']:>9,d}: "
                f"{row['s']:8.3f} s"
            )
        print(
            f"{'method':28} | {'evaluations':>11} | {'wall s':>7} | {'field s':>7} | "
            f"{'evals ratio':>11} | {'time ratio':>10} | {'vertices':>8} | {'faces':>8} | "
            f"{'added GiB':>9}"
        )
        for row in decode["rows"]:
            print(
                f"{row['method']:28} | {row['evaluations']:11,d} | {row['wall_s']:7.2f} | "
                f"{row['field_s']:7.2f} | {row['evaluations_vs_base']:11.3f} | "
                f"{row['time_vs_base']:10.3f} | {row.get('vertices', 0):8,d} | "
                f"{row.get('faces', 0):8,d} | {row.get('added_gib', 0.0):9.3f}"
            )
        for row in decode["rows"]:
            if "mean_distance_voxels" in row:
                print(
                    f"{row['method']} against dense: mean vertex distance "
                    f"{row['mean_distance_voxels']:.4f} voxel (largest "
                    f"{row['max_distance_voxels']:.3f}), {row['parts']} parts (dense "
                    f"{row['dense_parts']})"
                )
    print(
        "(peak GiB: CUDA memory allocated on a GPU; on the cpu the whole process's peak RSS; "
        "added GiB: the most a row added over what was in use when it began)"
    )
    engine = results.get("engine")
    if engine:
        print("\none generation through Engine.generate")
        if "error" in engine:
            print(f"  failed: {engine['error']}")
        else:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in engine["timings_s"].items())
            print(
                f"  {engine['device']} {engine['precision']}, {engine['steps']} steps, grid "
                f"{engine['grid']}: {stages}; wall {engine['wall_s']:.2f} s; "
                f"{engine['faces']} faces; peak {engine['peak_gib']} GiB"
            )
    if "save" in results:
        print(f"  (saved folder: {results['save']['gb']:.2f} GB in {results['save']['s']:.1f} s)")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="fp32", help="comma list of fp32, fp16, bf16")
    p.add_argument(
        "--calls", type=int, default=3, help="prior calls to time per precision (127 = 64 steps)"
    )
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps before timing the prior")
    p.add_argument("--grids", default="128", help="comma list of extract_mesh grid sizes")
    p.add_argument(
        "--chunks", default="", help="comma list of LatentField chunk sizes to time (optional)"
    )
    p.add_argument("--no-prior", action="store_true", help="skip the prior: decode a random latent")
    p.add_argument("--no-dense", action="store_true", help="skip the dense baselines")
    p.add_argument(
        "--dense-grids",
        default="128",
        help="comma list of grids for the dense reference (128 is the ratios' base)",
    )
    p.add_argument("--no-engine", action="store_true", help="skip the end-to-end generation")
    p.add_argument(
        "--engine-precision", default="auto", help="precision of the end-to-end generation"
    )
    p.add_argument(
        "--kept-octaves",
        type=int,
        default=3,
        help="positional-encoding octaves the random renderer keeps "
        "(tiny.renderer.shape_renderer): 3 as the tiny models (much surface), 1 for simpler shapes",
    )
    p.add_argument(
        "--sdf-gain",
        type=float,
        default=1.0,
        help="steepen the random field's signed distance by this factor (same surface)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the cpu (0: leave)")
    p.add_argument("--work", type=Path, help="keep the saved pipeline and the job here")
    p.add_argument("--json", type=Path, help="write every number here")
    args = p.parse_args(argv)
    args.precisions = [x.strip().lower() for x in args.precision.split(",") if x.strip()]
    args.grid_list = [int(x) for x in args.grids.split(",") if x.strip()]
    args.chunk_list = [int(x) for x in args.chunks.split(",") if x.strip()]
    dense = [] if args.no_dense else args.dense_grids.split(",")
    args.dense_list = [int(x) for x in dense if x.strip()]
    if args.calls < 1:
        p.error("--calls must be at least 1")
    if not args.grid_list:
        p.error("--grids must name at least one grid size")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
    if args.threads:
        torch.set_num_threads(args.threads)
    # Heun: calls = 2 * steps - 1, so an even --calls is rounded up to the next odd count.
    steps = (args.calls + 1) // 2
    results: dict[str, Any] = {"machine": machine(), "args": dict(vars(args))}
    for derived in ("precisions", "grid_list", "chunk_list", "dense_list"):
        results["args"].pop(derived)

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")

    device = resolve_device(args.device, "fp32").device
    print(f"device {device}; building the full-size pipeline with random weights ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tokenizer_dir = write_tiny_pipeline(work / "tiny", "text") / "tokenizer"
        start = time.perf_counter()
        pipe = build_pipeline(args.seed, tokenizer_dir, args.kept_octaves, args.sdf_gain)
        results["build_s"] = round(time.perf_counter() - start, 2)
        results["parameters"] = parameter_counts(pipe)
        print(
            f"built in {results['build_s']} s: "
            + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in results["parameters"].items()),
            flush=True,
        )
        if not args.no_engine:
            start = time.perf_counter()
            gb = save_like_the_hub(pipe, work / "shap-e", tokenizer_dir)
            results["save"] = {"gb": round(gb, 3), "s": round(time.perf_counter() - start, 2)}
            print(f"saved {gb:.2f} GB in {results['save']['s']} s", flush=True)
        save()

        pipe.to(device)
        results["prior"] = []
        latent = None
        for precision in [] if args.no_prior else args.precisions:
            try:
                choice = resolve_device(device, precision)
            except ShapEError as err:
                results["prior"].append({"precision": precision, "skipped": err.message})
                print(f"prior {precision}: skipped ({err.message})", flush=True)
                continue
            row, sampled = time_prior(pipe, choice, steps, args.warmup)
            results["prior"].append(row)
            if latent is None or precision == "fp32":
                latent = sampled
            print(
                f"prior {precision}: {row['call_ms_median']:.1f} ms per call (median of "
                f"{row['calls']}), 64 steps ~ {row['projected_64_steps_s']:.1f} s",
                flush=True,
            )
            save()

        def keep_decode(partial: dict[str, Any]) -> None:
            results["decode"] = partial
            save()

        print("decoding ...", flush=True)
        results["decode"] = time_decoding(
            pipe.shap_e_renderer,
            latent,
            device,
            args.grid_list,
            args.dense_list,
            args.seed,
            args.chunk_list,
            keep_decode,
        )
        for row in results["decode"]["rows"]:
            faces = f", {row['faces']:,d} faces" if "faces" in row else ""
            print(
                f"  {row['method']}: {row['evaluations']:,d} evaluations, "
                f"{row['wall_s']:.2f} s{faces}",
                flush=True,
            )
        save()

        # Free the in-memory copy first: the engine loads its own from the saved folder.
        del pipe
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not args.no_engine:
            print("one generation through the engine ...", flush=True)
            results["engine"] = time_engine(
                work / "shap-e", work, device, args.engine_precision, steps, args.grid_list[0]
            )
            save()
    print_tables(results)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
