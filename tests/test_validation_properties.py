"""Properties of the input validators (hypothesis): whatever JSON a client sends, a
validator returns a value within its bounds or raises ValidationError naming the
field, never anything else; the same holds through the app, where bad input is a
4xx and nothing is enqueued."""

from __future__ import annotations

import json
import math
from urllib.parse import quote

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from tasks.errors import ValidationError
from tests.bad_input import assert_nothing_enqueued
from web.common import validation as v
from web.fleet.auth import check_miner_id

# Derandomized: CI sees the same examples every run; no example database on disk.
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)
THROUGH_THE_APP = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # nothing is enqueued
)

# Any text, lone surrogates and control characters included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
    max_leaves=25,
)


def clean(text: str) -> bool:
    return not v.SURROGATE.search(text) and not v.CONTROL.search(text)


VALIDATORS = {
    "text": (
        lambda b: v.text(b, "f", 20),
        lambda r: isinstance(r, str) and len(r) <= 20 and clean(r),
    ),
    "identifier": (
        lambda b: v.identifier(b, "f", 20),
        lambda r: r.isprintable() and not any(ch.isspace() for ch in r) and len(r) <= 20,
    ),
    "integer": (
        lambda b: v.integer(b, "f", 1, 1, 8),
        lambda r: type(r) is int and 1 <= r <= 8,
    ),
    "number": (lambda b: v.number(b, "f", 0.0, 0.0, 2.0), lambda r: 0.0 <= r <= 2.0),
    "boolean": (lambda b: v.boolean(b, "f"), lambda r: isinstance(r, bool)),
    "text_list": (
        lambda b: v.text_list(b, "f", 4, 8),
        lambda r: len(r) <= 4 and all(isinstance(x, str) and 0 < len(x) <= 8 for x in r),
    ),
    "number_maps": (lambda b: v.number_maps(b, "f"), lambda r: r is None),
}


@pytest.mark.parametrize("name", sorted(VALIDATORS))
@PROPERTY
@given(value=ANY_JSON)
def test_a_validator_returns_a_bounded_value_or_names_the_field(name, value):
    validate, within_bounds = VALIDATORS[name]
    try:
        result = validate({"f": value})
    except ValidationError as exc:
        assert exc.details["field"] == "f" and exc.status == 400
    else:
        assert within_bounds(result), result


@PROPERTY
@given(value=ANY_JSON)
def test_a_session_id_is_clean_or_refused(value):
    try:
        found = v.session_id({"session_id": value})
    except ValidationError as exc:
        assert exc.details["field"] == "session_id"
    else:
        assert found is None or v.SESSION_ID.fullmatch(found)


@PROPERTY
@given(value=ANY_TEXT)
def test_an_id_in_a_url_is_clean_or_refused(value):
    try:
        assert v.path_id(value, "job_id") == value and v.PATH_ID.fullmatch(value)
    except ValidationError as exc:
        assert exc.details["field"] == "job_id"


def strict(value: object, depth: int = 1) -> bool:
    """What strict JSON allows, written out plainly (the reference for parse_json)."""
    if depth > v.MAX_DEPTH:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return abs(value) <= v.MAX_SAFE_INTEGER
    if isinstance(value, str):
        return not v.SURROGATE.search(value)
    if isinstance(value, list):
        return all(strict(x, depth + 1) for x in value)
    if isinstance(value, dict):
        keys = all(not v.SURROGATE.search(k) for k in value)
        return keys and all(strict(x, depth + 1) for x in value.values())
    return True


@PROPERTY
@given(value=ANY_JSON)
def test_parse_json_takes_exactly_strict_json(value):
    sent = json.dumps(value)  # NaN and Infinity written as Python's json does
    try:
        parsed = v.parse_json(sent)
    except ValidationError as exc:
        assert not strict(value) and exc.details["field"]
    else:
        assert strict(value) and parsed == value


@PROPERTY
@given(data=st.binary(max_size=64))
def test_parse_json_of_any_bytes_is_a_value_or_a_validation_error(data):
    try:
        v.parse_json(data)
    except ValidationError as exc:
        assert exc.details["field"]


COMPLETION_FIELDS = ["model", "messages", "max_tokens", "temperature", "stop", "n", "user"]


@THROUGH_THE_APP
@given(field=st.sampled_from(COMPLETION_FIELDS), value=ANY_JSON)
def test_any_value_of_a_field_is_refused_or_reaches_dispatch(client, redis, field, value):
    """No miner serves model ``m``: a body that passes validation ends in 404
    (``model_not_found``) before anything is published; every other body is a 400."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code in (400, 404), response.data
    assert response.json["error"]["param"]
    assert_nothing_enqueued(redis)


@THROUGH_THE_APP
@given(job_id=ANY_TEXT)
def test_any_job_id_in_the_url_is_a_4xx(client, redis, job_id):
    response = client.get("/jobs/" + quote(job_id.encode("utf-8", "surrogatepass"), safe=""))
    assert response.status_code in (400, 404), response.data
    assert response.is_json and response.json["error"]


@pytest.mark.parametrize("value", ["abc\n", "abc\r\n", "\nabc"])
def test_an_id_with_a_line_break_is_refused(value):
    """``$`` matches before a final line feed; ids are checked whole (``fullmatch``), so
    none reaches a Redis key, a topic or a log line with one."""
    with pytest.raises(ValidationError):
        v.session_id({"session_id": value})
    with pytest.raises(ValidationError):
        v.path_id(value, "job_id")
    with pytest.raises(ValidationError):
        check_miner_id(value)
