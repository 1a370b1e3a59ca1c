"""Fuzzing the protocol's reader and the request validation: whatever a line holds, the answer
is a parsed request or a ShapEError with a known code, and valid values are never coerced."""

import json
import math
import os
import re

import pytest

from shape_e_blender.core import protocol
from shape_e_blender.core.errors import (
    CODE_NAMES,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ShapEError,
)
from shape_e_blender.core.params import SEED_MAX, SETTINGS, SOURCES, GenerationParams

hypothesis = pytest.importorskip("hypothesis")  # not in the Python 3.13 environment
st = hypothesis.strategies
given = hypothesis.given

# Deterministic and without an example database: CI runs the same examples every time.
FUZZ = hypothesis.settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)

# Any character, NUL and lone surrogates included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=20)
ODD_TEXT = st.sampled_from(["", " ", "\0", "a\0b", "\ud800", "\udcff", "\n", "AUTO", "cuda:٣"])
HUGE_INTS = st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**400, -(10**400), 10**4299])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
    | ODD_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)

GENERATE_KEYS = (*SETTINGS, *protocol.GENERATE_OPTIONS)
KEYS = st.sampled_from(GENERATE_KEYS) | ANY_TEXT
IDS = st.integers() | HUGE_INTS | ANY_TEXT | st.none()
BAD_IDS = st.booleans() | st.floats() | st.lists(st.integers(), max_size=2) | st.just({})


def dump(value, ascii_only: bool = True) -> bytes:
    """``value`` as a line; without ascii_only a lone surrogate becomes bytes that are not UTF-8."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


METHOD_NAMES = st.sampled_from(protocol.METHODS) | ANY_TEXT
BAD_MEMBERS = {
    "jsonrpc": JSON_VALUES | st.sampled_from(["2", "2.0 ", "1.0", 2.0]),
    "id": BAD_IDS,
    "method": JSON_VALUES | st.sampled_from([m.upper() for m in protocol.METHODS]),
    "params": JSON_VALUES,
}


@st.composite
def envelopes(draw, methods=METHOD_NAMES):
    """Requests and notifications: well formed, then up to two members left out or made wrong."""
    method = draw(methods)
    msg = {"jsonrpc": "2.0", "id": draw(IDS), "method": method, "params": draw(params_for(method))}
    for name in draw(st.sets(st.sampled_from(sorted(msg)), max_size=2)):
        if draw(st.booleans()):
            del msg[name]
        else:
            msg[name] = draw(BAD_MEMBERS[name])
    return msg


def params_for(method: str):
    """Params for ``method``: its own members, fuzzed, or any object."""
    own = {
        "generate": generate_params(),
        "download": st.fixed_dictionaries(
            {},
            optional={
                "model": st.just("openai/shap-e") | JSON_VALUES,
                "kind": st.sampled_from(["text", "image"]) | JSON_VALUES,
                "cache_dir": ANY_TEXT | JSON_VALUES,
            },
        ),
        "cancel": st.fixed_dictionaries({}, optional={"id": IDS | BAD_IDS}),
    }
    return own.get(method, st.just({})) | st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=3)


def generate_params():
    """generate's params: a valid request with fuzzed members added, replaced or left out."""
    return st.builds(
        lambda base, extra, drop: {k: v for k, v in (base | extra).items() if k not in drop},
        st.sampled_from(
            [
                {"prompt": "a red chair"},
                {"image": "chair.png", "image_data": "aGVsbG8="},
                {"latent": "0/latent.npy"},
            ]
        ),
        st.dictionaries(KEYS, JSON_VALUES | wrong_types(), max_size=3),
        st.sets(st.sampled_from(GENERATE_KEYS), max_size=2),
    )


def wrong_types():
    """Bools, whole floats, numbers as text and containers: what a parameter of another JSON type
    must refuse, not convert."""
    return st.one_of(
        st.booleans(),
        st.sampled_from([3.0, 64.0, 0.5, "3", "64", "true", [1], {"a": 1}, [], {}]),
    )


def lines():
    """What a client might send on one line: any bytes, any JSON, and near-valid requests."""
    return st.one_of(
        st.binary(max_size=60),
        st.builds(dump, JSON_VALUES, st.booleans()),
        st.builds(dump, envelopes(), st.booleans()),
    )


# -- the reader ----------------------------------------------------------------------------------


def check_error(err: ShapEError) -> None:
    assert isinstance(err, ShapEError)
    assert err.code in CODE_NAMES
    assert isinstance(err.message, str) and isinstance(err.hint, str)
    if err.code == INVALID_PARAMS:
        assert isinstance(err.field, str)  # "" where the parameter is named ""
    # The answer that carries it can always be written.
    assert json.loads(protocol.encode(protocol.error_response(None, err)))


def expected_id(line: bytes):
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None


@FUZZ
@given(lines())
def test_any_line_parses_to_a_request_or_a_parse_or_request_error(line):
    rid = protocol.request_id_of(line)
    assert rid == expected_id(line)
    try:
        req = protocol.parse_request(line)
    except ShapEError as err:
        check_error(err)
        assert err.code in (PARSE_ERROR, INVALID_REQUEST)
        return
    obj = json.loads(line)
    assert isinstance(req.method, str) and req.method == obj["method"]
    assert isinstance(req.params, dict)
    assert req.id is None or (isinstance(req.id, (int, str)) and not isinstance(req.id, bool))
    assert req.id == rid and req.notification == ("id" not in obj)
    if isinstance(obj.get("params"), dict):  # compared as JSON: NaN is not equal to itself
        assert json.dumps(req.params) == json.dumps(obj["params"])


@FUZZ
@given(ANY_TEXT)
def test_a_text_line_with_lone_surrogates_never_escapes_as_another_exception(text):
    for line in (text, '{"jsonrpc": "2.0", "id": 1, "method": ' + json.dumps(text) + "}"):
        try:
            req = protocol.parse_request(line)
        except ShapEError as err:
            check_error(err)
        else:
            assert req.method == text


# -- generate's params -----------------------------------------------------------------------------


def check_no_coercion(name: str, sent, got) -> None:
    """An accepted value is the one that was sent, but for the documented normalisations."""
    s = SETTINGS.get(name)
    if sent is None or (sent == "" and s is not None and s.kind is str):
        assert got == (s.default if s else None)
    elif name == "prompt":
        assert got == " ".join(sent.split())
    elif s is not None and s.kind is int:
        assert type(sent) is int and got == sent
    elif s is not None and s.kind is float:
        assert type(sent) in (int, float) and type(got) is float and got == sent
    elif s is not None and s.choices:
        assert isinstance(sent, str) and got == sent.lower()
    else:
        assert type(got) is type(sent) and got == sent


def check_usable(req: protocol.GenerateRequest) -> None:
    """What is accepted can be used: its answer encodes, torch reads its device, and the OS can
    name its job folder."""
    assert protocol.encode(protocol.response(1, req.to_json()))
    device = req.params.device
    assert device in SETTINGS["device"].values or re.fullmatch(r"cuda:[0-9]+", device)
    if req.job_dir is not None:
        assert "\0" not in req.job_dir and os.fsencode(req.job_dir)


def refused_field(params: dict) -> str:
    try:
        protocol.GenerateRequest.from_json(params)
    except ShapEError as err:
        check_error(err)
        assert err.code == INVALID_PARAMS
        return err.field or ""
    return ""


@FUZZ
@given(generate_params() | st.dictionaries(KEYS, JSON_VALUES, max_size=4))
def test_generate_params_are_accepted_as_sent_or_refused_naming_a_parameter(params):
    try:
        req = protocol.GenerateRequest.from_json(params)
    except ShapEError as err:
        check_error(err)
        assert err.code == INVALID_PARAMS
        assert err.field in params or err.field in SOURCES
        return
    assert not set(params) - set(GENERATE_KEYS)
    got = req.to_json() | {"job_dir": req.job_dir, "image_data": req.image_data}
    got |= {name: getattr(req.params, name) for name in SETTINGS}
    for name, sent in params.items():
        check_no_coercion(name, sent, got[name])
    check_usable(req)
    assert GenerationParams.from_json(params) == req.params


@FUZZ
@given(st.sampled_from(GENERATE_KEYS), JSON_VALUES | wrong_types() | ODD_TEXT | HUGE_INTS)
def test_one_bad_parameter_is_refused_by_its_name(name, value):
    base = {"prompt": "a red chair"}
    if name in SOURCES:
        base = {}
    elif name == "image_data":
        base = {"image": "chair.png"}
    params = base | {name: value}
    field = refused_field(params)
    if not field:
        req = protocol.GenerateRequest.from_json(params)
        got = getattr(req.params, name) if name in SETTINGS else getattr(req, name)
        check_no_coercion(name, value, got)
        check_usable(req)
    elif name in SOURCES and value in (None, ""):
        assert field == "prompt"  # no source at all
    else:
        assert field == name


# "cuda:" and digits of any script, or any text.
DEVICES = (
    st.builds(
        str.__add__,
        st.sampled_from(["cuda:", "CUDA:", "cuda", "cpu", ""]),
        st.text(
            st.characters(categories=["Nd", "No", "Zs"]) | st.sampled_from("0123456789:"),
            max_size=4,
        ),
    )
    | ANY_TEXT
)


@FUZZ
@given(DEVICES)
def test_a_device_is_accepted_only_as_torch_reads_it(device):
    params = {"prompt": "a red chair", "device": device}
    field = refused_field(params)
    if field:
        assert field == "device"
    else:
        req = protocol.GenerateRequest.from_json(params)
        check_no_coercion("device", device, req.params.device)
        check_usable(req)


def wrong_type_for(name: str):
    """Values of a JSON type that ``name`` does not take."""
    s = SETTINGS.get(name)
    containers = st.lists(st.integers(), max_size=2) | st.dictionaries(ANY_TEXT, st.integers())
    if s is not None and s.kind is int:
        return st.booleans() | st.floats() | st.integers().map(str) | containers
    if s is not None and s.kind is float:
        return st.booleans() | st.integers().map(str) | st.floats().map(str) | containers
    if name in ("inline", "allow_download"):
        return st.integers() | st.floats() | st.sampled_from(["true", "false", ""]) | containers
    # Text parameters: prompt, image, latent, model, device, precision, job_dir, image_data.
    return st.booleans() | st.integers() | st.floats(allow_nan=False) | containers


@FUZZ
@given(st.data())
def test_values_of_the_wrong_json_type_are_refused_never_converted(data):
    name = data.draw(st.sampled_from(GENERATE_KEYS))
    value = data.draw(wrong_type_for(name))
    base = {} if name in SOURCES else {"prompt": "a red chair"}
    if name == "image_data":
        base = {"image": "chair.png"}
    assert refused_field(base | {name: value}) == name


@FUZZ
@given(
    st.fixed_dictionaries(
        {"prompt": ANY_TEXT.filter(lambda t: t.strip() and "\0" not in t)},
        optional={
            "seed": st.integers(0, SEED_MAX),
            "steps": st.integers(1, 1000),
            "guidance_scale": st.floats(0, 100) | st.integers(0, 100),
            "grid_size": st.integers(32, 512),
            "variants": st.integers(1, 16),
            "device": st.sampled_from(["auto", "CUDA", "cuda:0", "cuda:12", "mps", "Cpu"]),
            "precision": st.sampled_from(["auto", "fp32", "FP16", "bf16"]),
            "model": ANY_TEXT,
            "inline": st.booleans(),
            "allow_download": st.booleans(),
            "job_dir": st.text(min_size=1).filter(lambda t: "\0" not in t),
        },
    )
)
def test_valid_params_are_accepted_unchanged(params):
    req = protocol.GenerateRequest.from_json(params)
    for name, sent in params.items():
        got = getattr(req.params, name) if name in SETTINGS else getattr(req, name)
        check_no_coercion(name, sent, got)


@FUZZ
@given(JSON_VALUES)
def test_params_that_are_not_an_object_are_refused(value):
    if isinstance(value, dict):
        return
    with pytest.raises(ShapEError) as info:
        GenerationParams.from_json(value)
    assert info.value.code == INVALID_PARAMS and info.value.field == "params"


def test_a_guidance_scale_that_is_not_finite_or_out_of_range_is_refused_naming_it():
    for value in (math.inf, -math.inf, math.nan, -0.5, 100.5, 101):
        assert refused_field({"prompt": "a chair", "guidance_scale": value}) == "guidance_scale"


# -- regressions found by the fuzzing ----------------------------------------------------------


def test_a_guidance_scale_past_floats_range_is_refused_naming_it():
    """float(10**400) raised OverflowError, which the worker answered as a bug of its own."""
    for value in (10**400, -(10**400)):
        assert refused_field({"prompt": "a chair", "guidance_scale": value}) == "guidance_scale"
    line = '{"jsonrpc": "2.0", "id": 1, "method": "generate", "params": {"prompt": "a chair", '
    req = protocol.parse_request(line + '"guidance_scale": 1' + "0" * 400 + "}}")
    assert refused_field(req.params) == "guidance_scale"


def test_a_cuda_index_takes_ascii_digits_only():
    """cuda:٣ (an Arabic-Indic three) was accepted and became cuda:3 in the worker."""
    for device in ("cuda:٣", "cuda:１", "cuda:0٣"):
        assert refused_field({"prompt": "a chair", "device": device}) == "device"
    assert GenerationParams.create(prompt="a chair", device="CUDA:10").device == "cuda:10"


def test_a_job_dir_no_file_name_can_hold_is_refused_naming_it():
    """A NUL or a lone surrogate in job_dir passed validation and failed the job as a bug."""
    for job_dir in ("jobs/\0", "\ud800"):
        assert refused_field({"prompt": "a chair", "job_dir": job_dir}) == "job_dir"
    req = protocol.GenerateRequest.from_json({"prompt": "a chair", "job_dir": "jobs/ä/\udcff"})
    assert req.job_dir == "jobs/ä/\udcff"  # not UTF-8 on disk, but a name all the same
