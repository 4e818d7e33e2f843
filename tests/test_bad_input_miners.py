"""Bad input from miners, in URLs and query strings, and wrong methods and paths: each a
4xx with JSON naming the problem, nothing enqueued (issue 9, point 6)."""

from __future__ import annotations

import uuid

import pytest

from tests.bad_input import assert_nothing_enqueued, named_field, raw
from tests.conftest import TOKEN


@pytest.fixture
def miner_keys(client) -> dict[str, str]:
    """Bearer headers of a new push miner and a new legacy miner, and the push one's id."""
    token = {"Authorization": f"Bearer {TOKEN}"}
    ids = {"push": f"m-{uuid.uuid4().hex[:8]}", "legacy": f"old-{uuid.uuid4().hex[:8]}"}
    push = client.post("/register", json={"miner_id": ids["push"]}, headers=token)
    legacy = client.post("/register_miner", json={"miner_id": ids["legacy"]}, headers=token)
    return {
        "push": f"Bearer {push.json['key']}",
        "legacy": f"Bearer {legacy.json['key']}",
        "push_id": ids["push"],
    }


def beat(**fields: object) -> dict[str, object]:
    """A heartbeat body (the test puts in its miner's id)."""
    body = {"status": "available", "slots": 2, "free_slots": 2}
    return {"json": {**body, "models": ["echo"], "engine": "echo", **fields}}


def result(**fields: object) -> dict[str, object]:
    return {"json": {"job_id": "j1", "response": "hi", **fields}}


@pytest.mark.parametrize(
    ("path", "kwargs", "field"),
    [
        ("/heartbeat", beat(status="sleeping"), "status"),
        ("/heartbeat", beat(slots=-1, free_slots=0), "free_slots"),
        ("/heartbeat", beat(slots=2**60, free_slots=0), "slots"),
        ("/heartbeat", beat(free_slots=3), "free_slots"),
        ("/heartbeat", beat(models="echo"), "models"),
        ("/heartbeat", beat(models=[""]), "models"),
        ("/heartbeat", beat(models=["a\x00"]), "models"),
        ("/heartbeat", beat(models=["m"] * 1000), "models"),
        ("/heartbeat", beat(memory={"used_mb": "lots"}), "memory"),
        ("/heartbeat", beat(memory={"used_mb": True}), "memory"),
        ("/heartbeat", beat(engine_stats=[1.5]), "engine_stats"),
        ("/heartbeat", raw('{"miner_id": "m1", "memory": {"used_mb": NaN}}'), "memory.used_mb"),
        ("/heartbeat", beat(group="\ud800"), "group"),
        ("/heartbeat", beat(mood="happy"), "mood"),
        ("/submit_result", {"json": {"response": "hi"}}, "job_id"),
        ("/submit_result", result(job_id="j" * 65), "job_id"),
        ("/submit_result", result(job_id="a\x00"), "job_id"),
        ("/submit_result", {"json": {"job_id": "j1"}}, "response"),
        ("/submit_result", result(error="boom"), "error"),
        ("/submit_result", result(response=5), "response"),
        ("/submit_result", result(usage={"tokens": 1}), "usage"),
        ("/submit_result", result(usage={"prompt_tokens": -1}), "usage.prompt_tokens"),
        ("/submit_result", result(usage={"prompt_tokens": 2**60}), "usage.prompt_tokens"),
        ("/submit_result", result(inference_ms=-1), "inference_ms"),
        ("/submit_result", result(lease_id="l\x00"), "lease_id"),
        ("/submit_result", result(finish_reason="a b"), "finish_reason"),
        ("/submit_result", result(miner_id="m1"), None),  # another miner's name: 401
    ],
)
def test_bad_miner_bodies(client, redis, miner_keys, path, kwargs, field):
    auth = miner_keys["push" if path == "/heartbeat" else "legacy"]
    if path == "/heartbeat" and "json" in kwargs:
        kwargs = {"json": {"miner_id": miner_keys["push_id"], **kwargs["json"]}}
    response = client.post(path, headers={"Authorization": auth}, **kwargs)
    if field is None:
        assert response.status_code == 401
    else:
        assert response.status_code == 400, response.data
        assert named_field(response) == field
    assert_nothing_enqueued(redis)


def test_an_oversized_result_is_a_413_naming_the_response(client, redis, miner_keys):
    response = client.post(
        "/submit_result",
        headers={"Authorization": miner_keys["legacy"]},
        **result(response="x" * 70_000),
    )
    assert (response.status_code, named_field(response)) == (413, "response")


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "1e999", "abc", "%00", "20.5", "0x10"])
def test_bad_waits_answer_at_once(client, redis, miner_keys, wait):
    response = client.get(f"/get_work?wait={wait}", headers={"Authorization": miner_keys["legacy"]})
    assert (response.status_code, named_field(response)) == (400, "wait")
    assert_nothing_enqueued(redis)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/jobs/" + "j" * 65, "job_id"),
        ("/jobs/" + "j" * 10_000, "job_id"),
        ("/jobs/a%00b", "job_id"),
        ("/jobs/a%20b", "job_id"),
        ("/jobs/%E2%80%AEevil", "job_id"),
        ("/jobs/%ED%A0%80", "job_id"),  # a UTF-8 encoded surrogate
        ("/jobs/%FF", "job_id"),
        ("/api/v2/operations/" + "o" * 65, "op_id"),
        ("/api/v2/operations/o%0Ap", "op_id"),
    ],
)
def test_bad_ids_in_urls(client, redis, url, field):
    response = client.get(url)
    assert (response.status_code, named_field(response)) == (400, field)


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/chat/direct", 405),
        ("PUT", "/chat", 405),
        ("DELETE", "/jobs/j1", 405),
        ("POST", "/healthz", 405),
        ("PATCH", "/register", 405),
        ("GET", "/nope", 404),
        ("POST", "/jobs", 404),
        ("GET", "/assistant/" + "p" * 5000 + "/chat", 405),
        ("POST", "/assistant/no-such-project/chat", 404),
    ],
)
def test_wrong_methods_and_paths_are_json(client, method, url, status):
    response = client.open(url, method=method, json={"message": "hi"})
    assert response.status_code == status
    assert response.is_json and response.json["error"] and response.json["code"]


def test_openai_errors_keep_their_shape_for_wrong_methods(client):
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json["error"]["type"] == "invalid_request_error"
