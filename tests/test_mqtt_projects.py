"""Seed 004's clients as they are: paho clients on ``{project}/user_input`` holding
two-turn conversations with each of its five projects, answered on
``{project}/assistant_response/{session_id}`` with the session's history, and the same
sessions over HTTP. A real Mosquitto, gateway, Redis and echo miner."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

import pytest

from chat_service.sessions import SessionStore
from chat_service.tokens import counter
from tasks.keys import Keys
from tasks.lua import Scripts
from tests.mqtt_client import MOSQUITTO, PLAIN, Gateway, Session

pytestmark = pytest.mark.skipif(
    not os.path.exists(MOSQUITTO) and not os.environ.get("CI"), reason="no mosquitto"
)
SEED_004 = ("maze", "driving", "bloodcell", "racing", "general")


@pytest.fixture
def broker(processes) -> str:
    return processes.mosquitto(PLAIN)[0]


@pytest.fixture
def gateway(settings, processes, broker) -> Callable[..., Gateway]:
    """A gateway for the shipped projects (seed 004's among them)."""
    return lambda **env: processes.gateway(settings, broker, "", **env)


def turns(redis, project: str, session_id: str) -> list[tuple[str, str]]:
    store = SessionStore(redis, Scripts(redis), Keys("mia"), counter())
    return [(t.role, t.content) for t in store.load(project, session_id).history]


def say(client: Session, project: str, session_id: str, message: str) -> dict:
    payload = json.dumps({"session_id": session_id, "message": message})
    client.client.publish(f"{project}/user_input", payload, qos=1).wait_for_publish(10)
    topic, body = client.answers.get(timeout=30)
    assert topic == f"{project}/assistant_response/{session_id}", body
    return body


@pytest.mark.parametrize("name", SEED_004)
def test_two_turns_with_each_seed_004_project(miner, gateway, broker, redis, name):
    miner("0")
    gateway()
    client = Session(broker, [f"{name}/assistant_response/+"])
    sid = uuid.uuid4().hex[:12]
    try:
        first = say(client, name, sid, "How do I start?")
        second = say(client, name, sid, "And then?")
    finally:
        client.client.loop_stop()
        client.client.disconnect()
    assert (first["session_id"], first["class"], first["response"]) == (
        sid,
        None,
        "echo: How do I start?",
    )
    assert second["response"] == "echo: And then?"
    assert turns(redis, name, sid) == [
        ("user", "How do I start?"),
        ("assistant", "echo: How do I start?"),
        ("user", "And then?"),
        ("assistant", "echo: And then?"),
    ]


def test_a_chat_session_goes_on_over_http_and_twenty_turns_at_once_all_land(
    api, miner, gateway, broker, redis
):
    miner("0", slots=4)
    gateway(MIA_MQTT_RATE_BURST="30")  # 22 turns: not over the limit
    client = Session(broker, ["maze/assistant_response/+"])
    sid = uuid.uuid4().hex[:12]
    try:
        say(client, "maze", sid, "over mqtt")
        sent = {"message": "over http", "session_id": sid}
        over_http = api.post(f"{api.base}/assistant/maze/chat", json=sent, timeout=30)  # type: ignore[attr-defined]
        assert over_http.json()["session_id"] == sid
        for i in range(20):  # all at once: the gateway handles them in parallel
            payload = json.dumps({"session_id": sid, "message": f"burst {i}"})
            client.client.publish("maze/user_input", payload, qos=1)
        answers = [client.answers.get(timeout=60)[1] for _ in range(20)]
    finally:
        client.client.loop_stop()
        client.client.disconnect()
    assert [a for a in answers if "response" not in a] == []
    assert sorted(a["response"] for a in answers) == sorted(f"echo: burst {i}" for i in range(20))
    said = [content for role, content in turns(redis, "maze", sid) if role == "user"]
    assert said[:2] == ["over mqtt", "over http"]
    assert sorted(said[2:]) == sorted(f"burst {i}" for i in range(20))
