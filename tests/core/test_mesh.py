import numpy as np
import pytest

from shape_e_blender.core.mesh import MeshData


def _tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64)
    c = np.linspace(0, 1, 12).reshape(4, 3)
    return MeshData(v, f, c)


def test_dtypes_are_normalised():
    m = _tetra()
    assert m.vertices.dtype == np.float32 and m.faces.dtype == np.int32
    assert m.colors.dtype == np.float32
    assert (m.vertex_count, m.face_count) == (4, 4)


def test_file_round_trip_without_pickle(tmp_path):
    m = _tetra()
    path = m.save(tmp_path / "sub" / "mesh.npz")
    assert not list(tmp_path.rglob("*.part"))
    back = MeshData.load(path)
    np.testing.assert_array_equal(back.vertices, m.vertices)
    np.testing.assert_array_equal(back.faces, m.faces)
    np.testing.assert_array_equal(back.colors, m.colors)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["colors", "faces", "vertices"]


def test_base64_round_trip():
    m = _tetra()
    back = MeshData.from_base64(m.to_base64())
    np.testing.assert_array_equal(back.faces, m.faces)


@pytest.mark.parametrize(
    ("v", "f", "c"),
    [
        (np.zeros((4, 2)), np.zeros((1, 3)), np.zeros((4, 3))),
        (np.zeros((4, 3)), np.zeros((1, 4)), np.zeros((4, 3))),
        (np.zeros((4, 3)), np.zeros((1, 3)), np.zeros((3, 3))),
        (np.zeros((4, 3)), np.array([[0, 1, 4]]), np.zeros((4, 3))),
    ],
)
def test_bad_shapes_are_refused(v, f, c):
    with pytest.raises(ValueError):
        MeshData(v, f, c)


def test_a_mesh_file_with_nan_vertices_is_refused_before_any_import(tmp_path):
    from shape_e_blender.core.errors import JOB_FAILED, ShapEError
    from shape_e_blender.core.results import MeshEntry

    v = np.zeros((3, 3), np.float32)
    v[1, 2] = np.nan
    path = tmp_path / "mesh.npz"
    np.savez(path, vertices=v, faces=np.array([[0, 1, 2]], np.int32), colors=np.zeros((3, 3)))
    for load in (lambda: MeshData.load(path), MeshEntry(0, path=str(path)).load):
        with pytest.raises(ShapEError) as info:
            load()  # MeshEntry.load: what import_job and every import call
        assert info.value.code == JOB_FAILED and "NaN" in info.value.message


@pytest.mark.parametrize("kept", [0, 1, 3, 10, 0.5, -1])
def test_a_mesh_file_cut_short_is_refused_naming_the_file_and_what_to_do(tmp_path, kept):
    from shape_e_blender.core.errors import JOB_FAILED, ShapEError
    from shape_e_blender.core.results import MeshEntry

    data = _tetra().to_bytes()
    path = tmp_path / "0" / "mesh.npz"
    path.parent.mkdir()
    path.write_bytes(data[: int(len(data) * kept) if isinstance(kept, float) else kept])
    with pytest.raises(ShapEError) as info:
        MeshEntry(0, path=str(path)).load()
    err = info.value
    assert err.code == JOB_FAILED and str(path) in err.message
    assert "cut short or damaged" in err.message and "pickle" not in err.message
    assert "generate again with the same seed" in err.hint


def test_a_mesh_file_that_is_gone_or_not_a_mesh_says_which(tmp_path):
    from shape_e_blender.core.errors import ShapEError

    with pytest.raises(ShapEError, match="is missing"):
        MeshData.load(tmp_path / "gone.npz")
    lone = tmp_path / "lone.npz"
    with lone.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ShapEError, match="a single array"):
        MeshData.load(lone)
    np.savez(lone, vertices=np.zeros((1, 3)))
    with pytest.raises(ShapEError, match="no faces, colors array"):
        MeshData.load(lone)
