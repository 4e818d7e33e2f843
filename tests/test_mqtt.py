"""The MQTT gateway against the real Mosquitto (MIA_MQTT_URL, default 127.0.0.1:1883),
a real gateway process, real echo miners and a paho-mqtt client."""

from __future__ import annotations

import json
import os
import queue
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest

from chat_service.projects import DEFAULT_FILE
from scripts.launch import ROOT, child_env, free_port, gateway_argv
from scripts.processes import kill, spawn, stop, wait_for
from web.mqtt.gateway import broker_answers

MQTT_URL = os.environ.get("MIA_MQTT_URL", "mqtt://127.0.0.1:1883")


pytestmark = pytest.mark.skipif(
    not broker_answers(MQTT_URL) and not os.environ.get("CI"),
    reason=f"no MQTT broker at {MQTT_URL} (CI has one)",
)


@pytest.fixture
def project(tmp_path: Path) -> str:
    """A project of its own (the restaurant's config), so topics never collide."""
    name = f"t{uuid.uuid4().hex[:10]}"
    text = DEFAULT_FILE.read_text().replace("[restaurant]", f"[{name}]", 1)
    text = text.replace(
        'menu = "data/restaurant/', f'menu = "{DEFAULT_FILE.parent}/data/restaurant/', 1
    )
    (tmp_path / "projects.toml").write_text(text.split("[sushi_bar]")[0])
    return name


@pytest.fixture
def gateway(settings, project, tmp_path) -> Iterator[Callable[..., object]]:
    client_id = f"mia-gateway-test-{uuid.uuid4().hex[:8]}"
    procs = []

    def start(shipped_projects: bool = False) -> object:
        env = child_env(
            settings,
            MIA_MQTT_URL=MQTT_URL,
            MIA_MQTT_CLIENT_ID=client_id,
            MIA_PROJECTS_FILE="" if shipped_projects else str(tmp_path / "projects.toml"),
            MIA_REQUEST_TIMEOUT_S="30",
        )
        log = tmp_path / f"gateway-{len(procs)}.log"
        proc = spawn(gateway_argv(), env, log=log, cwd=ROOT)
        procs.append(proc)
        wait_for(lambda: "subscribed to" in log.read_text() or proc.poll() is not None, 30, "gw")
        assert proc.poll() is None, log.read_text()
        return proc

    yield start
    for proc in procs:
        stop(proc)


def connect(project: str, broker: str = MQTT_URL) -> tuple[mqtt.Client, queue.Queue]:
    answers: queue.Queue = queue.Queue()
    url = urlparse(broker)
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    paho.on_message = lambda _c, _u, m: answers.put((m.topic, json.loads(m.payload)))
    subscribed = queue.Queue()
    paho.on_subscribe = lambda *args: subscribed.put(True)
    paho.connect(url.hostname or "127.0.0.1", url.port or 1883)
    paho.loop_start()
    paho.subscribe(f"{project}/assistant_response/+", qos=1)
    subscribed.get(timeout=10)
    return paho, answers


@pytest.fixture
def client(project) -> Iterator[tuple[mqtt.Client, queue.Queue]]:
    paho, answers = connect(project)
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


def test_a_conversation_over_mqtt_continues_over_http(api, miner, gateway):
    miner("0")
    gateway(shipped_projects=True)
    paho, answers = connect("restaurant")
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
        send(paho, project, {"session_id": sid, "message": f"hello number {i}"})
    found = answers_for(answers, 100, timeout=60)
    assert len(found) == 100
    for i, sid in enumerate(sessions):
        (body,) = found[f"{project}/assistant_response/{sid}"]
        assert body["response"] == f"echo: hello number {i}"


def test_messages_in_flight_survive_a_gateway_kill(miner, gateway, client, project, redis):
    miner("0", slots=4, MIA_ECHO_DELAY_MS="1500")
    first = gateway()
    paho, answers = client
    sessions = [f"k{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    for sid in sessions:
        send(paho, project, {"session_id": sid, "message": f"survive {sid}"})
    wait_for(lambda: redis.keys("mia:running:*"), 15, "the gateway to have work in flight")
    kill(first)  # kill -9: nothing acknowledged, nothing answered
    gateway()  # same client id, persistent session: the broker delivers them again
    found = answers_for(answers, len(sessions), timeout=60)
    assert {t.rsplit("/", 1)[1] for t in found} == set(sessions)


def test_bad_input_gets_an_error_reply_or_a_log_line_and_never_a_crash(
    miner, gateway, client, project, tmp_path
):
    miner("0")
    proc = gateway()
    paho, answers = client
    sid = uuid.uuid4().hex[:12]
    send(paho, project, b"not json at all")
    send(paho, project, b"x" * (70 * 1024))
    send(paho, project, {"session_id": sid})  # no message
    _, missing = answers.get(timeout=30)
    assert "message is required" in missing["error"]
    send(paho, f"nowhere{uuid.uuid4().hex[:6]}", {"session_id": sid, "message": "hi"})
    send(paho, project, {"session_id": sid, "message": "still there?"})
    _, alive = answers.get(timeout=30)
    assert alive["response"] == "echo: still there?"
    assert proc.poll() is None  # type: ignore[attr-defined]
    log = (tmp_path / "gateway-0.log").read_text()
    assert "payload is not JSON" in log and "payload over" in log


MOSQUITTO = "/usr/sbin/mosquitto"


@pytest.mark.skipif(
    not os.path.exists(MOSQUITTO) and not os.environ.get("CI"), reason="no mosquitto"
)
def test_the_gateway_reconnects_and_resubscribes_when_the_broker_restarts(
    miner, settings, project, tmp_path
):
    """A broker of this test's own, restarted under the gateway."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    broker = spawn([MOSQUITTO, "-c", str(conf)], {}, log=tmp_path / "mq.log")
    url = f"mqtt://127.0.0.1:{port}"
    wait_for(lambda: broker_answers(url), 10, "mosquitto")
    miner("0")
    env = child_env(settings, MIA_MQTT_URL=url, MIA_PROJECTS_FILE=str(tmp_path / "projects.toml"))
    log = tmp_path / "gw.log"
    gw = spawn(gateway_argv(), env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: log.read_text().count("subscribed to") >= 1, 30, "the gateway")
        stop(broker)
        broker = spawn([MOSQUITTO, "-c", str(conf)], {}, log=tmp_path / "mq2.log")
        wait_for(lambda: log.read_text().count("subscribed to") >= 2, 30, "a resubscription")
        paho, answers = connect(project, url)
        try:
            sid = uuid.uuid4().hex[:12]
            send(paho, project, {"session_id": sid, "message": "back again"})
            _, body = answers.get(timeout=30)
            assert body["response"] == "echo: back again"
        finally:
            paho.loop_stop()
            paho.disconnect()
    finally:
        stop(gw)
        stop(broker)
