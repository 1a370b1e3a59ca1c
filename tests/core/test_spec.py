"""Scene specs (core/spec.py): read whole, every problem named with its object and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shape_e_blender.core.errors import INVALID_PARAMS, ShapEError
from shape_e_blender.core.spec import OBJECT_KEYS, load_spec


def _write(folder: Path, text: str, name: str = "scene.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(ShapEError) as info:
        load_spec(path, **kwargs)
    err = info.value
    assert (err.code, err.field) == (INVALID_PARAMS, "filepath") and "scenes.md" in err.hint
    assert "nothing was generated" in err.message
    return [line[2:] for line in err.message.splitlines()[1:]]


def test_a_spec_merges_its_defaults_and_resolves_paths_from_its_folder(tmp_path):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "lamp.png").write_bytes(b"not read here")
    (tmp_path / "models" / "mine").mkdir(parents=True)
    path = _write(
        tmp_path,
        """
[defaults]
steps = 8
grid_size = 64
image_model = "models/mine"
collection = "Props"

[[object]]
prompt = "a red chair"
location = [1, 2.5, 0]
rotation = [0, 0, 90]
size = 0.9
collection = "Props/Chairs"
faces = 5000
texture_size = 1024
mark_asset = true

[[object]]
name = "Lamp"
image = "refs/lamp.png"
seed = 3
scale = [1, 2, 3]

[[object]]
prompt = "a red chair"
steps = 2
model = "someone/else"
""",
    )
    spec = load_spec(path, common={"device": "cpu"})
    assert spec.path == path.resolve()
    chair, lamp, chair2 = spec.objects
    assert [o.index for o in spec.objects] == [1, 2, 3]
    # Derived names stay unique: the second "a red chair" is numbered.
    assert (chair.name, lamp.name, chair2.name) == ("Red chair", "Lamp", "Red chair 2")
    assert chair.params.prompt == "a red chair" and chair.params.steps == 8
    assert chair.params.grid_size == 64 and chair.params.device == "cpu"
    assert chair.params.model is None  # no text model named: the builder's preference
    assert chair.placement.location == (1.0, 2.5, 0.0)
    assert chair.placement.rotation == (0.0, 0.0, 90.0) and chair.placement.size == 0.9
    assert chair.placement.collection_path == ["Props", "Chairs"]
    assert (chair.params.faces, chair.params.texture_size) == (5000, 1024)
    assert chair.placement.mark_asset and not lamp.placement.mark_asset
    assert (lamp.params.faces, lamp.params.texture_size) == (0, 0)
    assert lamp.params.image == str((tmp_path / "refs" / "lamp.png").resolve())
    assert lamp.params.model == str((tmp_path / "models" / "mine").resolve())
    assert lamp.params.seed == 3 and lamp.placement.scale == (1.0, 2.0, 3.0)
    assert lamp.placement.collection == "Props"  # from [defaults]
    assert chair2.params.steps == 2 and chair2.params.model == "someone/else"


def test_a_commands_models_replace_the_specs_defaults_but_not_an_objects_own(tmp_path):
    path = _write(
        tmp_path,
        """
[defaults]
text_model = "spec/text"
[[object]]
prompt = "a cup"
[[object]]
prompt = "a mug"
model = "own/model"
""",
    )
    assert [o.params.model for o in load_spec(path).objects] == ["spec/text", "own/model"]
    cup, mug = load_spec(path, text_model="cli/text").objects
    assert (cup.params.model, mug.params.model) == ("cli/text", "own/model")


def test_every_problem_is_listed_at_once_with_its_object_and_field(tmp_path):
    path = _write(
        tmp_path,
        """
colour = "red"
[defaults]
stepz = 2
[[object]]
prompt = "a red chair"
sead = 3
location = [1, 2]
[[object]]
name = "Vase"
image = "missing.png"
[[object]]
name = "Vase"
prompt = "a vase"
steps = "many"
scale = 2
size = 1
[[object]]
name = "Rug"
prompt = "a rug"
prompt2 = "x"
size = -1
rotation = "upright"
collection = "Props//Rugs"
grid_size = 8
""",
    )
    problems = _problems(path)
    expected = [
        ("'colour' is not part of a scene spec", "[defaults]"),
        ("[defaults], stepz: is not a spec key", "text_model"),
        ("object 1 ('Red chair'), sead: is not an object key", ", ".join(OBJECT_KEYS)),
        ("object 1 ('Red chair'), location: must be three numbers", "[1, 2]"),
        ("object 2 ('Vase'), image: there is no file", "missing.png"),
        ("object 3 ('Vase'), steps: must be a whole number", "'many'"),
        ("object 3 ('Vase'), size: give scale or size, not both", "metres"),
        ("object 3 ('Vase'), name: 'Vase' is the name of object 2 too", "its own name"),
        ("object 4 ('Rug'), prompt2: is not an object key", "allowed"),
        ("object 4 ('Rug'), grid_size: 8 is outside 32..512", "mesh resolution"),
        ("object 4 ('Rug'), rotation: must be three numbers", "degrees"),
        ("object 4 ('Rug'), size: must be a number of metres above 0", "-1"),
        ("object 4 ('Rug'), collection: must be a collection name", "Props//Rugs"),
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for start, also in expected:
        line = next((p for p in problems if p.startswith(start)), None)
        assert line is not None and also in line, (start, problems)


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("", "the spec lists no object"),
        (
            "[[object]]\nseed = 1\n",
            "object 1 ('Shap-E'), prompt: give exactly one of prompt, image",
        ),
        ('[[object]]\nprompt = "a"\nimage = "b.png"\n', "object 1 ('A'), image: there is no file"),
        ('object = "chair"\n', "object: must be [[object]] tables"),
        ('defaults = 3\n[[object]]\nprompt = "a"\n', "defaults: must be a table"),
        ('[[object]]\nprompt = "a"\nname = ""\n', "object 1 (''), name: must be a name"),
        (
            '[[object]]\nprompt = "a"\nscale = [1, 0, 1]\n',
            "object 1 ('A'), scale: must be a number",
        ),
        ('[[object]]\nprompt = "a"\nmark_asset = 1\n', "object 1 ('A'), mark_asset: must be true"),
        ('[[object]]\nprompt = "a"\nfaces = -5\n', "object 1 ('A'), faces: -5 is outside"),
        ('[[object]]\nprompt = "a"\nlocation = [1, true, 0]\n', "object 1 ('A'), location:"),
        ('[[object]]\nprompt = "a"\nvariants = 99\n', "object 1 ('A'), variants: 99 is outside"),
    ],
)
def test_a_bad_spec_names_what_is_wrong(tmp_path, text, start):
    problems = _problems(_write(tmp_path, text))
    assert any(p.startswith(start) for p in problems), problems


def test_a_device_the_command_gives_is_checked_like_any_field(tmp_path):
    path = _write(tmp_path, '[[object]]\nprompt = "a cup"\n')
    problems = _problems(path, common={"device": "gpu"})
    assert problems[0].startswith("object 1 ('Cup'), device: 'gpu' is not a device")


def test_a_toml_syntax_error_gives_its_line_and_column(tmp_path):
    path = _write(tmp_path, '[[object]]\nprompt = "a cup"\nseed = = 3\n')
    with pytest.raises(ShapEError) as info:
        load_spec(path)
    assert info.value.field == "filepath"
    assert "scene.toml is not valid TOML" in info.value.message
    assert "line 3, column 8" in info.value.message


def test_a_missing_or_unreadable_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ShapEError) as info:
        load_spec(tmp_path / "none.toml")
    assert info.value.field == "filepath" and "cannot read the scene spec" in info.value.message
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[object]]\nprompt = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ShapEError) as info:
        load_spec(path)
    assert "not UTF-8" in info.value.message


def test_a_spec_nested_too_deep_is_refused_not_a_crash(tmp_path):
    """tomllib recursed into a RecursionError on 5,000 nested arrays: a traceback, not an error."""
    path = _write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + '\n[[object]]\nprompt = "a"\n')
    with pytest.raises(ShapEError) as info:
        load_spec(path)
    assert info.value.field == "filepath" and "nests arrays or tables too deeply" in str(info.value)


def test_a_spec_saved_with_a_byte_order_mark_reads(tmp_path):
    """Windows editors start UTF-8 with a BOM; it read as "Invalid statement (line 1)"."""
    path = tmp_path / "scene.toml"
    path.write_bytes(b'\xef\xbb\xbf[[object]]\nprompt = "a cup"\n')
    assert [o.name for o in load_spec(path).objects] == ["Cup"]


def test_image_and_model_paths_the_os_cannot_look_up_are_problems_not_crashes(tmp_path):
    """A name too long for the file system raised OSError out of is_file() (Python 3.11-3.13)."""
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    long = "y" * 300
    text = (
        f'[[object]]\nimage = "{long}.png"\n[[object]]\nimage = "loop.png"\n'
        f'[[object]]\nprompt = "a"\nmodel = "{long}"\n[[object]]\nprompt = "b"\nsize = 1e30\n'
    )
    problems = _problems(_write(tmp_path, text))
    assert problems[0].startswith("object 1") and "File name too long" in problems[0]
    assert problems[1].startswith("object 2") and "a link that loops" in problems[1]
    # A model that is no folder is a hub repo id to the spec; the worker tells what is wrong.
    assert problems[2].startswith(
        "object 4 ('B'), size: must be a number of metres above 0, at most 10000"
    )
    assert len(problems) == 3
