"""The worker end to end: a real subprocess running tiny random Shap-E pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shape_e_blender.core.errors import CANCELLED, INVALID_PARAMS, JOB_FAILED, NO_SURFACE
from shape_e_blender.core.files import PART_SUFFIX
from shape_e_blender.core.mesh import MeshData
from shape_e_blender.core.protocol import DECODE_STEPS, PROTOCOL_VERSION
from tests.support import small_disk

from .workerproc import WorkerProcess

FAST = {"steps": 3, "grid_size": 32}


def _mesh(result: dict, variant: int = 0) -> MeshData:
    return MeshData.load(result["meshes"][variant]["path"])


def test_hello_reports_protocol_versions_and_devices(worker):
    msg, _ = worker.call("hello")
    hello = msg["result"]
    assert hello["protocol"] == PROTOCOL_VERSION
    assert {"torch", "diffusers", "transformers", "numpy", "python"} <= set(hello["versions"])
    assert hello["devices"][-1]["name"] == "cpu"
    assert hello["default_device"] == "cpu"  # no GPU on the test machines


def test_text_job_progress_files_and_result(worker, tiny_text_model, tmp_path):
    steps = 4
    params = {"prompt": "a red chair", "model": str(tiny_text_model), "seed": 3, "steps": steps}
    params |= {"grid_size": 32, "job_dir": str(tmp_path / "job")}
    msg, notes = worker.call("generate", params)
    result = msg["result"]
    assert all(n["method"] == "progress" and n["params"]["id"] == msg["id"] for n in notes)
    stages = [n["params"]["stage"] for n in notes]
    assert stages.index("encoding") < stages.index("sampling") < stages.index("decoding")
    assert stages.index("decoding") < stages.index("writing")
    sampling = [n["params"] for n in notes if n["params"]["stage"] == "sampling"]
    # exactly one notification per prior call: 2N-1 for N Heun steps
    assert [s["step"] for s in sampling] == list(range(1, 2 * steps))
    assert {s["total"] for s in sampling} == {2 * steps - 1}
    assert all(s["eta_s"] >= 0 for s in sampling)

    job = Path(result["job_dir"])
    assert job == tmp_path / "job"
    for name in ("request.json", "result.json", "job.log", "0/mesh.npz", "0/latent.npy"):
        assert (job / name).is_file(), name
    request = json.loads((job / "request.json").read_text())
    assert request["resolved"]["guidance_scale"] == 15.0
    assert request["resolved"]["device"] == "cpu"
    assert result["params"]["steps"] == steps and result["params"]["seed"] == 3
    entry = result["meshes"][0]
    mesh = _mesh(result)
    assert mesh.face_count == entry["faces"] > 100
    assert mesh.vertex_count == entry["vertices"]
    assert 0.0 <= mesh.colors.min() and mesh.colors.max() <= 1.0
    # inside the box, or within one voxel of it where the surface is closed at the boundary
    assert np.all(np.abs(mesh.vertices) <= 1.0 + 2 / 31)
    assert "npz_b64" not in entry
    latent = np.load(job / "0" / "latent.npy", allow_pickle=False)
    assert latent.dtype == np.float32 and latent.ndim == 2
    assert set(result["timings"]) >= {"load", "encode", "sample", "decode", "write"}
    assert "sampling" in (job / "job.log").read_text()


def _hausdorff(a: MeshData, b: MeshData) -> float:
    from scipy.spatial import cKDTree

    ab = cKDTree(b.vertices).query(a.vertices)[0].max()
    ba = cKDTree(a.vertices).query(b.vertices)[0].max()
    return float(max(ab, ba))


def test_decoding_reports_thousandths_of_every_variant_with_the_time_left(worker, tiny_text_model):
    """Decoding read 0/1 until it was done: the extraction's own progress never left it."""
    params = {"prompt": "a mug", "model": str(tiny_text_model), "variants": 2} | FAST
    msg, notes = worker.call("generate", params)
    assert "result" in msg, msg
    decoding = [n["params"] for n in notes if n["params"]["stage"] == "decoding"]
    assert {d["total"] for d in decoding} == {2 * DECODE_STEPS}
    steps = [d["step"] for d in decoding]
    assert steps == sorted(steps) and steps[-1] == 2 * DECODE_STEPS
    # within each variant's share, not only at its ends; with a time left while it runs
    inside = [d for d in decoding if d["step"] % DECODE_STEPS]
    assert {d["variant"] for d in inside} == {0, 1}
    assert all(d["eta_s"] is not None and d["eta_s"] >= 0 for d in inside)
    assert all(d["variant"] == d["step"] // DECODE_STEPS for d in inside)


def test_same_seed_same_mesh_and_variants_reproduce_alone(worker, tiny_text_model):
    base = {"prompt": "a lamp", "model": str(tiny_text_model), **FAST}
    msg_a, _ = worker.call("generate", base | {"seed": 11, "variants": 2})
    msg_b, _ = worker.call("generate", base | {"seed": 12})
    msg_c, _ = worker.call("generate", base | {"seed": 12})
    a, b, c = msg_a["result"], msg_b["result"], msg_c["result"]
    assert [m["seed"] for m in a["meshes"]] == [11, 12]
    # the same request gives the same mesh, bit for bit
    for name in ("vertices", "faces", "colors"):
        np.testing.assert_array_equal(getattr(_mesh(b), name), getattr(_mesh(c), name))
    # variant 1 of seed 11 is seed 12 on its own (batched CLIP/prior maths differ by ~1e-5)
    va, vb = _mesh(a, 1), _mesh(b, 0)
    assert va.face_count == vb.face_count
    assert _hausdorff(va, vb) < 1e-3
    assert _hausdorff(_mesh(a, 0), va) > 0.05  # and the two variants differ


def test_inline_result_matches_the_file(worker, tiny_text_model):
    params = {"prompt": "a cup", "model": str(tiny_text_model), "inline": True, **FAST}
    msg, _ = worker.call("generate", params)
    entry = msg["result"]["meshes"][0]
    inline = MeshData.from_base64(entry["npz_b64"])
    on_disk = MeshData.load(entry["path"])
    np.testing.assert_array_equal(inline.vertices, on_disk.vertices)
    np.testing.assert_array_equal(inline.faces, on_disk.faces)
    result_json = json.loads((Path(msg["result"]["job_dir"]) / "result.json").read_text())
    assert "npz_b64" not in result_json["meshes"][0]


def test_latent_decodes_again_at_another_grid(worker, tiny_text_model):
    params = {"prompt": "a vase", "model": str(tiny_text_model), "seed": 2, **FAST}
    first, _ = worker.call("generate", params)
    latent = first["result"]["meshes"][0]["latent"]
    msg, notes = worker.call(
        "generate", {"latent": latent, "model": str(tiny_text_model), "grid_size": 64}
    )
    result = msg["result"]
    assert not [n for n in notes if n["params"]["stage"] == "sampling"]
    assert result["params"]["latent"] == latent and "seed" not in result["params"]
    assert "seed" not in result["meshes"][0]
    coarse, fine = _mesh(first["result"]), _mesh(result)
    ratio = fine.face_count / coarse.face_count
    assert 2.5 < ratio < 6.0, ratio  # a real surface: about 4x faces per grid doubling
    # same shape: the bounds agree within a coarse voxel
    lo_c, hi_c = coarse.bounds()
    lo_f, hi_f = fine.bounds()
    np.testing.assert_allclose(lo_c, lo_f, atol=2 / 31)
    np.testing.assert_allclose(hi_c, hi_f, atol=2 / 31)


def _write_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rgba = np.zeros((80, 120, 4), np.uint8)
    rgba[20:60, 70:110] = (200, 30, 30, 255)
    rgb = np.full((60, 100, 3), 240, np.uint8)
    rgb[10:50, 30:70] = (30, 30, 200)
    grey = np.full((64, 64), 255, np.uint8)
    grey[16:48, 16:48] = 60
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    paths = {
        "rgba": folder / "rgba.png",
        "rgb": folder / "rgb.jpg",
        "grey": folder / "grey.png",
        "grey16": folder / "grey16.png",
    }
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    Image.fromarray(rgb, "RGB").save(paths["rgb"])
    Image.fromarray(grey, "L").save(paths["grey"])
    Image.fromarray(grey16).save(paths["grey16"])
    return paths


@pytest.mark.parametrize("kind", ["rgba", "rgb", "grey", "grey16"])
def test_image_jobs(worker, tiny_image_model, tmp_path, kind):
    path = _write_images(tmp_path)[kind]
    msg, notes = worker.call(
        "generate", {"image": str(path), "model": str(tiny_image_model), **FAST}
    )
    result = msg["result"]
    assert result["params"]["guidance_scale"] == 3.0
    assert _mesh(result).face_count > 0
    prepared = Image.open(Path(result["job_dir"]) / "input.png")
    assert prepared.mode == "RGB" and prepared.width == prepared.height
    assert any(n["params"]["stage"] == "encoding" for n in notes)


def test_cancel_mid_sampling_then_a_good_job(worker, tiny_text_model, tmp_path):
    slow = {"prompt": "a long job", "model": str(tiny_text_model), "steps": 400, "grid_size": 32}
    slow["job_dir"] = str(tmp_path / "cancelled")
    rid = worker.send("generate", slow)
    while True:  # wait until sampling is under way
        msg = worker.next()
        p = msg.get("params", {})
        if msg.get("method") == "progress" and p.get("stage") == "sampling" and p["step"] >= 2:
            break
    cancel_id = worker.send("cancel", {"id": rid})
    after_ack, acked, steps = 0, False, [p["step"]]
    while True:
        msg = worker.next()
        if msg.get("id") == cancel_id:
            assert msg["result"] == {"cancelled": True}
            acked = True
        elif msg.get("id") == rid:
            break
        elif msg["params"]["stage"] == "sampling":
            steps.append(msg["params"]["step"])
            after_ack += acked
    assert acked
    assert msg["error"]["code"] == CANCELLED and msg["error"]["data"]["hint"]
    # The job folder says so too, in place of a result.
    written = json.loads((tmp_path / "cancelled" / "error.json").read_text())
    assert written == {"error": msg["error"]}
    assert not (tmp_path / "cancelled" / "result.json").exists()
    # it stops within one prior call of the cancel, long before the 799 calls asked for
    assert after_ack <= 1
    assert max(steps) < 2 * 400 - 1
    good, _ = worker.call("generate", {"prompt": "a stool", "model": str(tiny_text_model), **FAST})
    assert _mesh(good["result"]).face_count > 0


def test_queued_job_is_reported_and_can_be_cancelled(worker, tiny_text_model):
    base = {"model": str(tiny_text_model), **FAST}
    first = worker.send("generate", base | {"prompt": "first", "steps": 30})
    second = worker.send("generate", base | {"prompt": "second"})
    third = worker.send("generate", base | {"prompt": "third"})
    cancel_id = worker.send("cancel", {"id": third})
    seen: dict = {}
    while len([k for k in seen if k in (first, second, third, cancel_id)]) < 4:
        msg = worker.next()
        if "method" in msg:
            if msg["params"]["stage"] == "queued":
                seen.setdefault(("queued", msg["params"]["id"]), msg["params"])
            continue
        seen[msg["id"]] = msg
    assert seen[cancel_id]["result"] == {"cancelled": True}
    assert seen[third]["error"]["code"] == CANCELLED
    assert "result" in seen[first] and "result" in seen[second]
    assert seen[("queued", second)]["total"] == 1


def test_errors_inside_a_job_leave_the_worker_alive(worker, tiny_text_model, tmp_path):
    msg, _ = worker.call("generate", {"image": str(tmp_path / "missing.png"), **FAST})
    err = msg["error"]
    assert err["data"]["field"] == "image" and str(tmp_path) in err["message"]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5), np.float32))
    msg, _ = worker.call("generate", {"latent": str(bad), "model": str(tiny_text_model)})
    assert msg["error"]["code"] == INVALID_PARAMS
    assert "latent" in msg["error"]["message"] or msg["error"]["data"].get("field") == "latent"
    # a latent whose field has no zero crossing: the projected MLP weights are all zero
    flat = tmp_path / "flat.npy"
    shape = np.load(_any_latent(worker, tiny_text_model)).shape
    np.save(flat, np.zeros(shape, np.float32))
    flat_job = tmp_path / "flat-job"
    msg, _ = worker.call(
        "generate", {"latent": str(flat), "model": str(tiny_text_model), "job_dir": str(flat_job)}
    )
    assert msg["error"]["code"] == NO_SURFACE
    assert json.loads((flat_job / "error.json").read_text()) == {"error": msg["error"]}
    assert "no surface" in msg["error"]["message"]
    # A latent has no prompt or seed to change: its hint is another grid, or a new job.
    assert (
        "grid_size" in msg["error"]["data"]["hint"] and "prompt" not in msg["error"]["data"]["hint"]
    )
    assert msg["error"]["data"]["field"] == "latent"
    hello, _ = worker.call("hello")
    assert hello["result"]["protocol"] == PROTOCOL_VERSION


def _any_latent(worker, model) -> str:
    msg, _ = worker.call("generate", {"prompt": "x", "model": str(model), **FAST})
    return msg["result"]["meshes"][0]["latent"]


def test_end_of_input_finishes_the_work_then_exits(tiny_text_model, tmp_path):
    w = WorkerProcess(tmp_path)
    try:
        rid = w.send("generate", {"prompt": "last one", "model": str(tiny_text_model), **FAST})
        w.proc.stdin.close()
        msg, _ = w.response(rid)
        assert "result" in msg
        assert w.proc.wait(60) == 0
    finally:
        w.kill()


def test_a_full_disk_is_answered_as_the_disk_s_error_and_the_worker_goes_on(
    worker, tiny_text_model, tmp_path
):
    params = {"prompt": "a cup", "model": str(tiny_text_model), "steps": 2, "grid_size": 64}
    with small_disk(tmp_path / "small") as disk:
        msg, _ = worker.call("generate", params | {"job_dir": str(disk / "job")})
        error = msg["error"]
        assert error["code"] == JOB_FAILED and error["data"]["kind"] == "job_failed"
        assert error["data"]["field"] == "jobs_dir" and "No space left" in error["message"]
        assert "bug" not in error["data"]["hint"]
        assert (disk / "job" / "error.json").is_file() and not (
            disk / "job" / "result.json"
        ).exists()
        assert list(disk.rglob(f"*{PART_SUFFIX}")) == []
    msg, _ = worker.call("generate", params | {"job_dir": str(tmp_path / "roomy")})
    assert msg["result"]["meshes"][0]["faces"] > 0  # the same worker, the next job
