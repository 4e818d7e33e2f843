"""Bad input to the front doors: each gets a 4xx with JSON naming the problem, and
nothing is enqueued, leased or stored (issue 9, point 6). Miner endpoints, URLs and
methods: ``test_bad_input_miners.py``; the validators' properties:
``test_validation_properties.py``; the whole API fuzzed: ``test_schemathesis.py``."""

from __future__ import annotations

import io
import json

import pytest

from tests.bad_input import assert_nothing_enqueued, named_field, raw
from tests.conftest import ADMIN_TOKEN, TOKEN
from web.common.validation import body_limit

OK_MESSAGE = {"role": "user", "content": "hi"}


def chat(**fields: object) -> dict[str, object]:
    return {"json": {"message": "hi", **fields}}


def completion(**fields: object) -> dict[str, object]:
    return {"json": {"model": "m", "messages": [OK_MESSAGE], **fields}}


def process(**fields: object) -> dict[str, object]:
    return {"json": {"model_id": "m", "prompt": "hi", **fields}}


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


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"json": {"messages": [OK_MESSAGE]}}, "model"),
        (completion(model="m\x00"), "model"),
        (completion(model="a b"), "model"),
        ({"json": {"model": "m"}}, "messages"),
        (completion(messages=[]), "messages"),
        (completion(messages="hi"), "messages"),
        (completion(messages=[OK_MESSAGE] * 257), "messages"),
        (completion(messages=[OK_MESSAGE, "hi"]), "messages[1]"),
        (completion(messages=[{"role": "robot", "content": "hi"}]), "messages[0]"),
        (completion(messages=[{"role": ["user"], "content": "hi"}]), "messages[0]"),
        (completion(messages=[{**OK_MESSAGE, "extra": 1}]), "messages[0]"),
        (completion(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (completion(messages=[{"role": "user", "content": "a\x00"}]), "messages[0].content"),
        (completion(messages=[{**OK_MESSAGE, "name": 5}]), "messages[0].name"),
        (completion(messages=[{"role": "user", "content": "x" * 8001}]), "messages"),
        (
            raw('{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'),
            "messages[0].content",
        ),
        (raw('{"model": "m", "messages": [], "temperature": NaN}'), "temperature"),
        (completion(n=0), "n"),
        (completion(n=9), "n"),
        (completion(n=1.5), "n"),
        (completion(presence_penalty=0.5), "presence_penalty"),
        (completion(frequency_penalty=3), "frequency_penalty"),
        (completion(tools=[]), "tools"),
        (completion(response_format={"type": "json_object"}), "response_format"),
        (completion(stream_options=[]), "stream_options"),
        (completion(stream_options={"other": 1}), "stream_options"),
        (completion(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (completion(guided_choice="a"), "guided_choice"),
        (completion(guided_choice=["c"] * 65), "guided_choice"),
        (completion(max_completion_tokens=0), "max_completion_tokens"),
        (completion(max_completion_tokens=10**6), "max_completion_tokens"),
        (completion(max_tokens=10**6), "max_tokens"),
        (completion(user=5), "user"),
        (completion(stop=["a"] * 5), "stop"),
        (completion(colour="red"), "colour"),
        ({"data": "hi", "content_type": "text/plain"}, "body"),
    ],
)
def test_bad_chat_completions_name_the_param(client, redis, kwargs, field):
    response = client.post("/v1/chat/completions", **kwargs)
    assert response.status_code == 400, response.data
    assert named_field(response) == field
    assert_nothing_enqueued(redis)


@pytest.mark.parametrize("action", ["chat", "classify"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": "a\x00"}, "message"),
        ({"message": "hi", "session_id": "s" * 65}, "session_id"),
        ({"message": "hi", "session_id": "s" * 10_000}, "session_id"),
        ({"message": "hi", "session_id": "a\x00b"}, "session_id"),
        ({"message": "hi", "session_id": "a\u202eb"}, "session_id"),
        ({"message": "hi", "session_id": 12}, "session_id"),
        ({"message": "hi", "priority": 10}, "priority"),
        ({"message": "hi", "stream": "yes"}, "stream"),
        ({"message": "hi", "order": "pizza"}, "order"),
    ],
)
def test_bad_assistant_turns(client, redis, action, body, field):
    response = client.post(f"/assistant/restaurant/{action}", json=body)
    assert response.status_code == 400, response.data
    assert named_field(response) == field
    assert_nothing_enqueued(redis)


@pytest.mark.parametrize(
    ("path", "kwargs", "field"),
    [
        ("/api/v2/models/process", process(num_predictions=0), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions=9), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions=-1), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions=10**6), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions=10**30), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions=2.0), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions="2"), "num_predictions"),
        ("/api/v2/models/process", process(num_predictions=True), "num_predictions"),
        (
            "/api/v2/models/process",
            raw('{"model_id": "m", "prompt": "hi", "num_predictions": NaN}'),
            "num_predictions",
        ),
        ("/api/v2/models/process", process(max_tokens=0), "max_tokens"),
        ("/api/v2/models/process", process(max_tokens=4097), "max_tokens"),
        ("/api/v2/models/process", process(prompt=None), "prompt"),
        ("/api/v2/models/process", process(prompt="a\x00"), "prompt"),
        ("/api/v2/models/process", process(model_id="m\x00"), "model_id"),
        ("/api/v2/models/process", process(device_id="d" * 65), "device_id"),
        ("/api/v2/models/process", process(device_id="a b"), "device_id"),
        ("/api/v2/models/process", process(extra=1), "extra"),
        ("/api/v2/models/load", {"json": {}}, "model_id"),
        ("/api/v2/models/load", {"json": {"model_id": "m", "device_id": -5}}, "device_id"),
        ("/api/v2/models/load", {"json": {"model_id": "m", "device_id": 5.0}}, "device_id"),
        ("/api/v2/models/load", {"json": {"model_id": "m", "wait": "no"}}, "wait"),
        ("/api/v2/models/unload", {"json": {"model_id": ""}}, "model_id"),
        ("/api/v2/models/unload", {"json": {"model_id": "m", "x": 1}}, "x"),
        ("/register", {"json": {}}, "miner_id"),
        ("/register", {"json": {"miner_id": "m" * 65}}, "miner_id"),
        ("/register", {"json": {"miner_id": "a\x00"}}, "miner_id"),
        ("/register", {"json": {"miner_id": "../etc"}}, "miner_id"),
        ("/register", {"json": {"miner_id": "m1", "kind": "gpu"}}, "kind"),
        ("/register", {"json": {"miner_id": "m1", "kind": ["push"]}}, "kind"),
        ("/register_miner", raw("[]"), "body"),
        ("/register_miner", {"json": {"miner_id": 1.5}}, "miner_id"),
        ("/register_miner", {"json": {"miner_id": False}}, "miner_id"),
        ("/register_miner", {"json": {"miner_id": "old", "version": "1\x00"}}, "version"),
        ("/register_miner", {"json": {"miner_id": "old", "hostname": "h" * 256}}, "hostname"),
    ],
)
def test_bad_bodies_elsewhere(client, redis, path, kwargs, field):
    token = ADMIN_TOKEN if path.startswith("/api/v2/models/") else TOKEN
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(path, headers=headers, **kwargs)
    assert response.status_code == 400, response.data
    assert named_field(response) == field
    assert_nothing_enqueued(redis)
    assert not redis.keys("mia:minerkey:*")  # nobody was registered


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
