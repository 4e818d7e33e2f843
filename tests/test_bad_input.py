"""Bad input to the chat front doors (``/chat/direct``, ``/chat``) and bodies too large
for any door: each gets a 4xx with JSON naming the problem, and nothing is enqueued,
leased or stored (issue 9, point 6). The other front doors' bodies:
``test_bad_input_apis.py``; miner endpoints, URLs and methods:
``test_bad_input_miners.py``; the validators' properties:
``test_validation_properties.py``; the whole API fuzzed: ``test_schemathesis.py``."""

from __future__ import annotations

import io
import json

import pytest

from tests.bad_input import assert_nothing_enqueued, named_field, raw
from web.common.validation import body_limit


def chat(**fields: object) -> dict[str, object]:
    return {"json": {"message": "hi", **fields}}


NESTED = "[" * 40 + "]" * 40
DEEP = "[" * 5000 + "]" * 5000
CHAT_CASES = [
    ({"data": '{"message": "hi"}', "content_type": "text/plain"}, "body"),
    ({"data": {"message": "hi"}}, "body"),  # a form
    ({}, "body"),  # no body at all
    (raw("{not json"), "body"),
    (raw('{"message": "hi"} {"message": "again"}'), "body"),
    ({"data": b'{"message": "\xff"}', "content_type": "application/json"}, "body"),
    (raw("[]"), "body"),
    (raw('"hi"'), "body"),
    (raw("null"), "body"),
    (raw(NESTED), "body"),
    (raw(DEEP), "body"),
    (raw(f'{{"message": "hi", "stop": {NESTED}}}'), "stop"),
    (raw('{"message": NaN}'), "message"),
    (raw('{"message": "\\ud800"}'), "message"),
    (raw('{"message": "hi \\udfff there"}'), "message"),
    (raw('{"\\ud800": "hi"}'), "body"),
    (raw('{"message": "hi", "temperature": NaN}'), "temperature"),
    (raw('{"message": "hi", "temperature": Infinity}'), "temperature"),
    (raw('{"message": "hi", "top_p": -Infinity}'), "top_p"),
    (raw('{"message": "hi", "max_tokens": 1e400}'), "max_tokens"),
    (raw('{"message": "hi", "priority": 1' + "0" * 5000 + "}"), "body"),
    ({"json": {}}, "message"),
    ({"json": {"message": None}}, "message"),
    ({"json": {"message": 42}}, "message"),
    ({"json": {"message": True}}, "message"),
    ({"json": {"message": ["hi"]}}, "message"),
    ({"json": {"message": {"text": "hi"}}}, "message"),
    ({"json": {"message": " \t\n"}}, "message"),
    ({"json": {"message": "x" * 8001}}, "message"),
    ({"json": {"message": "a\x00b"}}, "message"),
    ({"json": {"message": "bell \x07"}}, "message"),
    ({"json": {"message": "esc \x1b[31m red"}}, "message"),
    ({"json": {"message": "c1 \x85"}}, "message"),
    (chat(session_id=7), "session_id"),
    (chat(session_id="s" * 65), "session_id"),
    (chat(session_id="s" * 10_000), "session_id"),
    (chat(session_id="a b"), "session_id"),
    (chat(session_id="a\x00"), "session_id"),
    (chat(session_id="caf\u00e9"), "session_id"),
    (chat(session_id="../../etc"), "session_id"),
    (chat(project="a\x00"), "project"),
    (chat(project="a b"), "project"),
    (chat(project="\u200bzero-width"), "project"),
    (chat(project="p" * 65), "project"),
    (chat(model=["a"]), "model"),
    (chat(model="m\x00"), "model"),
    (chat(model="\u202eevil"), "model"),
    (chat(model="m" * 129), "model"),
    (chat(priority="high"), "priority"),
    (chat(priority=10), "priority"),
    (chat(priority=-1), "priority"),
    (chat(priority=True), "priority"),
    (chat(priority=1.5), "priority"),
    (chat(priority=2**53), "priority"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=4097), "max_tokens"),
    (chat(max_tokens=10**30), "max_tokens"),
    (chat(max_tokens=1.0), "max_tokens"),
    (chat(max_tokens="8"), "max_tokens"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=-0.1), "temperature"),
    (chat(temperature=2.5), "temperature"),
    (chat(temperature=False), "temperature"),
    (chat(top_p=0), "top_p"),
    (chat(top_p=1.01), "top_p"),
    (chat(seed=-1), "seed"),
    (chat(seed=2**31), "seed"),
    (chat(seed=True), "seed"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat(stop=[""]), "stop"),
    (chat(stop=[1]), "stop"),
    (chat(stop="s" * 65), "stop"),
    (chat(stop={"a": 1}), "stop"),
    (chat(stop=["\x00"]), "stop"),
    (chat(choices=["c"] * 65), "choices"),
    (chat(choices="a"), "choices"),
    (chat(stream="yes"), "stream"),
    (chat(stream=1), "stream"),
]


@pytest.mark.parametrize("path", ["/chat/direct", "/chat"])
@pytest.mark.parametrize(("kwargs", "field"), CHAT_CASES)
def test_bad_chat_bodies(client, redis, path, kwargs, field):
    response = client.post(path, **kwargs)
    assert response.status_code == 400, response.data
    assert named_field(response) == field
    assert_nothing_enqueued(redis)


@pytest.mark.parametrize(
    ("kwargs", "field"), [(chat(colour="red"), "colour"), (chat(**{"x" * 10_000: 1}), "x" * 64)]
)
def test_an_unknown_field_is_refused_by_chat_direct(client, redis, kwargs, field):
    """``/chat``, a legacy endpoint, ignores it instead (test_legacy_tolerance.py)."""
    response = client.post("/chat/direct", **kwargs)
    assert (response.status_code, named_field(response)) == (400, field)
    assert_nothing_enqueued(redis)


def test_a_stream_on_the_queued_chat_is_refused(client, redis):
    response = client.post("/chat", json={"message": "hi", "stream": True})
    assert (response.status_code, named_field(response)) == (400, "stream")
    assert_nothing_enqueued(redis)


def test_an_oversized_body_is_a_json_413_naming_the_limit(client, redis, settings):
    limit = body_limit(settings.max_message_chars)
    body = json.dumps({"message": "x" * 200_000})
    for path in ("/chat/direct", "/chat", "/api/v2/models/process", "/register"):
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 413
        assert named_field(response) == "body"
        assert f"larger than {limit} bytes" in response.json["error"]
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert (response.status_code, named_field(response)) == (413, "body")
    assert_nothing_enqueued(redis)


@pytest.mark.parametrize(
    "message",
    [
        "emoji \U0001f355 and math \U0001d4b3",  # astral characters
        "\u05e9\u05dc\u05d5\u05dd \u202eright-to-left\u202c",
        "zero\u200bwidth\u200djoiner\ufeff",
        "tab\tand\nnew\r\nlines",
    ],
)
def test_real_unicode_text_is_accepted(client, redis, message):
    """The refusals above are of broken text, not of text in other scripts."""
    response = client.post("/chat", json={"message": message, "model": "", "session_id": "s-1"})
    assert response.status_code == 202, response.data


def test_null_is_an_optional_field_left_out(client, redis):
    body = {"message": "hi", "model": None, "max_tokens": None, "temperature": None}
    body |= {"top_p": None, "seed": None, "stop": None, "choices": None, "stream": None}
    response = client.post("/chat", json={**body, "priority": None, "session_id": None})
    assert response.status_code == 202, response.data


def test_a_declared_length_over_the_limit_is_refused_before_reading(client, redis):
    """A client that announces a huge body gets its 413 at once, not after sending it."""
    response = client.post(
        "/chat/direct",
        input_stream=io.BytesIO(b'{"message": "hi"}'),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(10**9)},
    )
    assert (response.status_code, named_field(response)) == (413, "body")
    assert_nothing_enqueued(redis)
