"""HTTP contract of the web tier: bad input, miner authentication, probes."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from tests.bad_input import assert_nothing_enqueued
from tests.conftest import TOKEN
from web.fleet.db import Miner

LONG = "x" * 8001


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": "Hello", "content_type": "text/plain"}, "body"),
        ({"data": "{not json", "content_type": "application/json"}, "body"),
        ({"json": ["Hello"]}, "body"),
        ({"json": {}}, "message"),
        ({"json": {"message": ""}}, "message"),
        ({"json": {"message": "   "}}, "message"),
        ({"json": {"message": 42}}, "message"),
        ({"json": {"message": None}}, "message"),
        ({"json": {"message": LONG}}, "message"),
        ({"json": {"message": "hi", "priority": "high"}}, "priority"),
        ({"json": {"message": "hi", "priority": 10}}, "priority"),
        ({"json": {"message": "hi", "priority": True}}, "priority"),
        ({"json": {"message": "hi", "session_id": 7}}, "session_id"),
        ({"json": {"message": "hi", "model": ["a"]}}, "model"),
        ({"json": {"message": "hi", "max_tokens": 0}}, "max_tokens"),
        ({"json": {"message": "hi", "temperature": "hot"}}, "temperature"),
        ({"json": {"message": "hi", "colour": "red"}}, "colour"),
    ],
)
def test_bad_chat_bodies_are_400_naming_the_field_and_enqueue_nothing(client, redis, kwargs, field):
    response = client.post("/chat/direct", **kwargs)
    assert response.status_code == 400
    assert response.json["field"] == field
    assert response.json["error"]
    assert_nothing_enqueued(redis)  # no job record, no queue, no reservation


def test_oversized_body_is_a_json_413(client, redis):
    response = client.post("/chat/direct", json={"message": "x" * 200_000})
    assert response.status_code == 413
    assert "error" in response.json
    assert_nothing_enqueued(redis)  # (not dbsize: housekeeping may write its own lock)


@pytest.fixture(autouse=True)
def new_ids(app):
    """m1 and m2 register anew in each test (the session's database outlives a test)."""
    with app.extensions["mia"].auth._sessions.begin() as session:
        session.execute(delete(Miner).where(Miner.miner_id.in_(["m1", "m2"])))


def register(client, miner_id="m1", token=TOKEN, current_key=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if current_key:
        headers["X-Miner-Key"] = current_key
    return client.post("/register", json={"miner_id": miner_id}, headers=headers)


def heartbeat(client, key, miner_id="m1", **fields):
    body = {"miner_id": miner_id, "status": "available", "slots": 2, "free_slots": 2}
    body |= {"models": ["echo"], "engine": "echo"} | fields
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/heartbeat", json=body, headers=headers)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_register_needs_the_registration_token(client, token):
    response = register(client, token=token)
    assert response.status_code == 401
    assert "token" in response.json["error"]


def test_register_returns_a_key_that_heartbeats(client, redis):
    response = register(client)
    assert response.status_code == 200
    body = response.json
    assert body["queue"] == "gpu-m1"
    assert heartbeat(client, body["key"]).status_code == 200
    (state,) = client.get("/metrics/gpus").json["miners"]
    assert state["miner_id"] == "m1"
    assert state["free_slots"] == 2


def test_key_is_stored_hashed(client, app):
    key = register(client).json["key"]
    with app.extensions["mia"].auth._sessions() as session:
        from web.fleet.db import Miner

        row = session.get(Miner, "m1")
    assert row.key_hash != key
    assert key not in row.key_hash
    assert len(row.key_hash) == 64


@pytest.mark.parametrize("key", [None, "not-the-key"])
def test_heartbeat_with_wrong_or_missing_key_is_401(client, redis, key):
    register(client)
    assert heartbeat(client, key).status_code == 401
    assert client.get("/metrics/gpus").json["miners"] == []


def test_a_miner_cannot_heartbeat_as_another(client):
    key_one = register(client, "m1").json["key"]
    register(client, "m2")
    assert heartbeat(client, key_one, miner_id="m2").status_code == 401


def test_registering_again_with_the_current_key_rotates_it(client):
    old = register(client).json["key"]
    new = register(client, current_key=old).json["key"]
    assert heartbeat(client, old).status_code == 401
    assert heartbeat(client, new).status_code == 200


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": "sleeping"}, "status"),
        ({"slots": "two"}, "slots"),
        ({"free_slots": 5}, "free_slots"),
        ({"models": "echo"}, "models"),
        ({"memory": {"used_mb": "lots"}}, "memory"),
    ],
)
def test_bad_heartbeats_are_400(client, fields, field):
    key = register(client).json["key"]
    response = heartbeat(client, key, **fields)
    assert response.status_code == 400
    assert response.json["field"] == field


def test_bad_miner_id_is_400(client):
    response = register(client, miner_id="../etc")
    assert response.status_code == 400
    assert response.json["field"] == "miner_id"


def test_probes(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_unknown_job_is_404(client):
    response = client.get("/jobs/does-not-exist")
    assert response.status_code == 404
    assert response.json["job_id"] == "does-not-exist"


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").json["code"] == "not_found"
    assert client.get("/chat/direct").status_code == 405
