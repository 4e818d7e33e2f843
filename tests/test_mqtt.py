"""The MQTT gateway against a real Mosquitto of each test's own, a real gateway process,
real echo miners and a paho-mqtt client. Never a shared broker (MIA_MQTT_URL's): the
gateway of a ``make run`` there subscribes to every ``+/user_input``, so a test's
messages would go to it too, or wait in its session while it is away."""

from __future__ import annotations

import json
import os
import queue
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest

from scripts.processes import kill, stop, wait_for
from tests.mqtt_client import MOSQUITTO, PLAIN, Gateway, Session

pytestmark = pytest.mark.skipif(
    not os.path.exists(MOSQUITTO) and not os.environ.get("CI"), reason="no mosquitto"
)


@pytest.fixture
def broker(processes) -> str:
    """A Mosquitto of the test's own (see the module's docstring)."""
    return processes.mosquitto(PLAIN)[0]


@pytest.fixture
def gateway(settings, project, tmp_path, processes, broker) -> Callable[..., Gateway]:
    """Start a gateway on ``broker`` (the same client id each time: a restart finds
    its persistent session); returns once its health check says it is subscribed."""
    client_id = f"mia-gateway-test-{uuid.uuid4().hex[:8]}"

    def start(shipped_projects: bool = False, **env: str) -> Gateway:
        projects = "" if shipped_projects else str(tmp_path / "projects.toml")
        return processes.gateway(settings, broker, projects, MIA_MQTT_CLIENT_ID=client_id, **env)

    return start


def connect(project: str, broker: str) -> tuple[mqtt.Client, queue.Queue]:
    session = Session(broker, [f"{project}/assistant_response/+"])
    return session.client, session.answers


@pytest.fixture
def client(project, broker) -> Iterator[tuple[mqtt.Client, queue.Queue]]:
    paho, answers = connect(project, broker)
    try:
        yield paho, answers
    finally:
        paho.loop_stop()
        paho.disconnect()


def send(paho: mqtt.Client, project: str, body: dict | bytes) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body)
    paho.publish(f"{project}/user_input", payload, qos=1).wait_for_publish(10)


def answers_for(answers: queue.Queue, n: int, timeout: float = 30) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for _ in range(n):
        topic, body = answers.get(timeout=timeout)
        found.setdefault(topic, []).append(body)
    return found


def test_a_conversation_over_mqtt_continues_over_http(api, miner, gateway, broker):
    miner("0")
    gateway(shipped_projects=True)
    paho, answers = connect("restaurant", broker)
    try:
        sid = uuid.uuid4().hex[:12]
        send(paho, "restaurant", {"session_id": sid, "message": "add two margheritas to my order"})
        topic, first = answers.get(timeout=30)
        assert topic == f"restaurant/assistant_response/{sid}"
        assert first["class"] == "order" and first["session_id"] == sid
        assert first["actions"][0]["tool"] == "order_add"
        assert set(first["timings"]) >= {"classify_ms", "answer_ms", "total_ms"}
        send(
            paho,
            "restaurant",
            {"session_id": sid, "message": "when do you open?", "request_id": "r-1"},
        )
        _, second = answers.get(timeout=30)
        assert (second["class"], second["request_id"]) == ("hours_location", "r-1")
    finally:
        paho.loop_stop()
        paho.disconnect()
    # the same session goes on over HTTP: the cart made over MQTT is there
    shown = api.post(
        f"{api.base}/assistant/restaurant/chat",
        json={"message": "show my order", "session_id": sid},
    ).json()
    assert shown["session_id"] == sid
    assert shown["actions"][0]["result"]["items"][0]["quantity"] == 2


def test_a_hundred_sessions_in_parallel_each_get_their_own_answer(miner, gateway, client, project):
    miner("0", slots=4)
    gateway()
    paho, answers = client
    sessions = [f"s{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(100)]
    for i, sid in enumerate(sessions):
        send(
            paho,
            project,
            {"session_id": sid, "message": f"hello there, how are you today number {i}"},
        )
    found = answers_for(answers, 100, timeout=60)
    assert len(found) == 100
    for i, sid in enumerate(sessions):
        (body,) = found[f"{project}/assistant_response/{sid}"]
        assert body["response"] == f"echo: hello there, how are you today number {i}"


def test_messages_in_flight_survive_a_gateway_kill(miner, gateway, client, project, redis):
    """Each turn is answered, not refused: the dead gateway's session locks outlive it
    (2 x MIA_REQUEST_TIMEOUT_S + 5 s), and the new one tries those sessions until then."""
    miner("0", slots=4, MIA_ECHO_DELAY_MS="1500")
    first = gateway(MIA_REQUEST_TIMEOUT_S="5")
    paho, answers = client
    sessions = [f"k{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    for sid in sessions:
        send(paho, project, {"session_id": sid, "message": f"hello there, how are you today {sid}"})
    wait_for(lambda: redis.keys("{mia}:running:*"), 15, "the gateway to have work in flight")
    kill(first.proc)  # kill -9: nothing acknowledged, nothing answered
    gateway(MIA_REQUEST_TIMEOUT_S="5")  # same client id: the broker delivers them again
    found = answers_for(answers, len(sessions), timeout=60)
    assert {t.rsplit("/", 1)[1] for t in found} == set(sessions)
    for topic, (body,) in found.items():
        assert (
            body.get("response")
            == f"echo: hello there, how are you today {topic.rsplit('/', 1)[1]}"
        ), body


def test_bad_input_gets_an_error_reply_or_a_log_line_and_never_a_crash(
    miner, gateway, client, project, tmp_path
):
    miner("0")
    found = gateway()
    paho, answers = client
    sid = uuid.uuid4().hex[:12]
    send(paho, project, b"not json at all")
    send(paho, project, b"x" * (70 * 1024))
    send(paho, project, {"session_id": sid})  # no message
    _, missing = answers.get(timeout=30)
    assert "message is required" in missing["error"]
    send(paho, f"nowhere{uuid.uuid4().hex[:6]}", {"session_id": sid, "message": "hi"})
    send(
        paho,
        project,
        {"session_id": sid, "message": "hello there, how are you today, still there?"},
    )
    _, alive = answers.get(timeout=30)
    assert alive["response"] == "echo: hello there, how are you today, still there?"
    assert found.proc.poll() is None
    log = found.output()
    assert "payload is not JSON" in log and "payload over" in log


def test_a_message_without_a_session_id_runs_no_turn_and_is_logged(miner, gateway, client, project):
    """The answer's topic is made from the session id: a message without one has no topic
    its client could know, so it is refused and logged (docs/mqtt.md), not answered on
    the topic of a session made up for it."""
    miner("0")
    found = gateway()
    paho, answers = client  # subscribed to every session's answers
    send(paho, project, {"message": "who am I?", "request_id": "r-no-session"})
    wait_for(lambda: "session_id is required" in found.output(), 30, "the log line")
    assert "request r-no-session" in found.output()
    sid = uuid.uuid4().hex[:12]
    send(paho, project, {"session_id": sid, "message": "and now?"})
    topic, body = answers.get(timeout=30)
    assert (topic, body["response"]) == (f"{project}/assistant_response/{sid}", "echo: and now?")
    assert answers.empty()  # nothing went to a made-up session


def test_the_gateway_reconnects_and_resubscribes_when_the_broker_restarts(
    miner, settings, project, tmp_path, processes
):
    """A broker of this test's own, restarted under the gateway; its health check says
    so meanwhile (503 while the broker is away)."""
    conf = "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
    url, broker = processes.mosquitto(conf)
    miner("0")
    gw = processes.gateway(settings, url, str(tmp_path / "projects.toml"))
    assert gw.output().count("subscribed to") == 1
    stop(broker)
    down = gw.wait_health("disconnected")
    assert gw.health()[0] == 503 and down["subscribed"] is False
    processes.mosquitto(conf, port=urlparse(url).port)
    gw.wait_ready()  # connected and subscribed again
    assert gw.output().count("subscribed to") == 2
    session = Session(url, [f"{project}/assistant_response/+"])
    try:
        sid = uuid.uuid4().hex[:12]
        session.send(
            project, {"session_id": sid, "message": "hello there, how are you today, again"}
        )
        ((_, body),) = session.take(1)
        assert body["response"] == "echo: hello there, how are you today, again"
    finally:
        session.close()
