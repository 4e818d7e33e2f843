"""Bad bodies to the other front doors: ``/v1/chat/completions``, the assistant, the v2
models API and miner registration. Each gets a 4xx with JSON naming the problem, and
nothing is enqueued, leased or stored (issue 9, point 6). The chat endpoints and body
limits: ``test_bad_input.py``."""

from __future__ import annotations

import pytest

from tests.bad_input import assert_nothing_enqueued, named_field, raw
from tests.conftest import ADMIN_TOKEN, TOKEN

OK_MESSAGE = {"role": "user", "content": "hi"}


def completion(**fields: object) -> dict[str, object]:
    return {"json": {"model": "m", "messages": [OK_MESSAGE], **fields}}


def process(**fields: object) -> dict[str, object]:
    return {"json": {"model_id": "m", "prompt": "hi", **fields}}


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
    assert not redis.keys("{mia}:minerkey:*")  # nobody was registered
