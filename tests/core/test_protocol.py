import json

import pytest

from shape_e_blender.core import protocol
from shape_e_blender.core.errors import (
    CANCELLED,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ShapEError,
)


def test_encode_is_one_line_even_with_newlines_in_strings():
    line = protocol.encode(protocol.request(1, "generate", {"prompt": "a\nb"}))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["params"]["prompt"] == "a\nb"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("{not json", PARSE_ERROR),
        ("[1, 2]", INVALID_REQUEST),
        ('{"id": 1, "method": "hello"}', INVALID_REQUEST),
        ('{"jsonrpc": "2.0", "id": 1}', INVALID_REQUEST),
        ('{"jsonrpc": "2.0", "id": [1], "method": "hello"}', INVALID_REQUEST),
        ('{"jsonrpc": "2.0", "id": 1, "method": "hello", "params": [1]}', INVALID_REQUEST),
    ],
)
def test_malformed_requests(line, code):
    with pytest.raises(ShapEError) as info:
        protocol.parse_request(line)
    assert info.value.code == code


def test_request_size_limit_applies_to_requests():
    big = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "x",
            "params": {"p": "a" * protocol.MAX_REQUEST_BYTES},
        }
    )
    with pytest.raises(ShapEError) as info:
        protocol.parse_request(big)
    assert info.value.code == INVALID_REQUEST
    assert protocol.request_id_of(big) == 1


def test_generate_request_parses_flags_and_params():
    req = protocol.parse_request(
        protocol.encode(
            protocol.request(
                7, "generate", {"prompt": "a cup", "seed": 3, "inline": True, "job_dir": "/j"}
            )
        )
    )
    gen = protocol.GenerateRequest.from_json(req.params)
    assert gen.params.prompt == "a cup" and gen.params.seed == 3
    assert gen.inline is True and gen.job_dir == "/j" and gen.allow_download is False
    assert protocol.GenerateRequest.from_json(gen.to_json()) == gen


def test_generate_request_rejects_bad_flags():
    with pytest.raises(ShapEError) as info:
        protocol.GenerateRequest.from_json({"prompt": "a", "inline": "yes"})
    assert info.value.code == INVALID_PARAMS and info.value.field == "inline"


def test_error_round_trip_keeps_hint_and_field():
    err = ShapEError(CANCELLED, "cancelled", "press Generate again", field=None)
    msg = protocol.error_response(3, err)
    back = ShapEError.from_json(json.loads(protocol.encode(msg))["error"])
    assert (back.code, back.message, back.hint) == (CANCELLED, "cancelled", "press Generate again")
    assert msg["error"]["data"]["kind"] == "cancelled"


def test_progress_json():
    p = protocol.Progress(id=2, stage="sampling", step=12, total=127, eta_s=3.14159)
    obj = p.to_json()
    assert obj == {"id": 2, "stage": "sampling", "step": 12, "total": 127, "eta_s": 3.14}
    assert protocol.Progress.from_json(obj).fraction == pytest.approx(12 / 127)


@pytest.mark.parametrize(
    ("stage", "step", "total", "text"),
    [
        ("sampling", 8, 15, "8/15"),
        ("loading", 0, 1, ""),  # a stage of one step has no count worth showing
        ("decoding", 437, 1000, "43.7%"),  # thousandths of one mesh, not 0/1
        ("decoding", 1500, 2000, "75.0% of 2 meshes"),
        ("downloading", 3 << 20, 10 << 20, "3/10 MB"),
        ("downloading", 0, 0, ""),  # the size is not known yet
    ],
)
def test_count_text_speaks_each_stages_unit(stage, step, total, text):
    assert protocol.count_text(stage, step, total) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "<1 s"), (0.6, "1 s"), (89, "89 s"), (600, "10 min"), (9000, "2.5 h")],
)
def test_duration_text(seconds, text):
    assert protocol.duration_text(seconds) == text


def test_lines_python_cannot_parse_are_parse_errors_not_exceptions():
    # Deep enough for every Python's parser: 3.11 stops near 1,000 levels, 3.13 far deeper.
    deep = (
        '{"jsonrpc": "2.0", "id": 1, "method": "x", "params": '
        + "[" * 100_000
        + "]" * 100_000
        + "}"
    )
    digits = '{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"n": ' + "9" * 5000 + "}}"
    for line in (deep, digits):
        with pytest.raises(ShapEError) as info:
            protocol.parse_request(line)
        assert info.value.code == PARSE_ERROR
        assert protocol.request_id_of(line) is None


def test_id_null_is_a_request_and_no_id_is_a_notification():
    null = protocol.parse_request('{"jsonrpc": "2.0", "id": null, "method": "status"}')
    absent = protocol.parse_request('{"jsonrpc": "2.0", "method": "status"}')
    assert null.id is None and not null.notification
    assert absent.id is None and absent.notification


def test_unknown_generate_parameters_are_refused_naming_them_and_the_known_ones():
    with pytest.raises(ShapEError) as info:
        protocol.GenerateRequest.from_json({"prompt": "a", "sead": 3, "zoom": 1})
    assert info.value.code == INVALID_PARAMS and info.value.field == "sead"
    assert "seed" in info.value.hint and "allow_download" in info.value.hint


def test_image_data_goes_with_an_image_and_stays_out_of_the_job_folders_record():
    req = protocol.GenerateRequest.from_json({"image": "chair.png", "image_data": "iVBORw0K"})
    assert req.image_data == "iVBORw0K" and req.to_json()["image_data"] == "iVBORw0K"
    assert "image_data" not in req.to_json(data=False)
    for bad in ({"prompt": "a cup", "image_data": "iVBORw0K"}, {"image": "a.png", "image_data": 3}):
        with pytest.raises(ShapEError) as info:
            protocol.GenerateRequest.from_json(bad)
        assert info.value.field == "image_data"


def test_the_id_of_a_line_too_long_to_read_whole_is_found_at_its_start():
    """The worker reads an over-long line in pieces and answers it with the id at its start."""
    assert protocol.leading_id(b'{"jsonrpc":"2.0","id":12,"method":"generate","params":{"p') == 12
    assert protocol.leading_id(b' { "id" : "job \\"7\\"" , "jsonrpc": "2.0"') == 'job "7"'
    assert protocol.leading_id(b'{"method":"generate","id":3') is None  # not at the start
    assert protocol.leading_id(b'{"jsonrpc":"2.0","id":1.5,') is None  # not an id
    assert protocol.leading_id(b'{"jsonrpc":"2.0","id":true,') is None
