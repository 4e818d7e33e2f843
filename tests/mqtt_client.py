"""What the MQTT tests share: a Mosquitto of a test's own, the gateway process and its
health check, and a paho-mqtt client (plain, TLS or with a user and password)."""

from __future__ import annotations

import json
import queue
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt

from chat_service.projects import DEFAULT_FILE
from scripts.launch import ROOT, child_env, free_port, gateway_argv
from scripts.processes import spawn, stop, wait_for
from tasks.settings import Settings
from web.mqtt.broker import PORTS, broker_answers

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
PLAIN = "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"


def project_file(tmp_path: Path) -> str:
    """A project of the test's own (the restaurant's config) in tmp_path/projects.toml."""
    name = f"t{uuid.uuid4().hex[:10]}"
    text = DEFAULT_FILE.read_text().replace("[restaurant]", f"[{name}]", 1)
    text = text.replace(
        'menu = "data/restaurant/', f'menu = "{DEFAULT_FILE.parent}/data/restaurant/', 1
    )
    (tmp_path / "projects.toml").write_text(text.split("[sushi_bar]")[0])
    return name


@dataclass(frozen=True)
class Tls:
    """What a TLS client brings: the CA it trusts, and its certificate (if any)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


class Processes:
    """Brokers and gateways a test starts; ``close()`` stops every one (fixtures call it
    at teardown, so nothing outlives a failed test)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def mosquitto(self, conf: str, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
        """A Mosquitto on ``port`` (a free one by default): ``conf`` with ``{port}`` filled
        in. Returns (``mqtt://127.0.0.1:<port>``, the process) once it accepts connections."""
        port = port or free_port()
        n = len(self.started)
        path = self.tmp_path / f"mosquitto-{n}.conf"
        # as root, Mosquitto drops to its own user, who may not read tmp_path's files
        path.write_text("user root\n" + conf.format(port=port))
        proc = spawn([MOSQUITTO, "-c", str(path)], {}, log=self.tmp_path / f"mosquitto-{n}.log")
        self.started.append(proc)
        url = f"mqtt://127.0.0.1:{port}"
        wait_for(lambda: broker_answers(url) or proc.poll() is not None, 10, "mosquitto")
        assert proc.poll() is None, (self.tmp_path / f"mosquitto-{n}.log").read_text()
        return url, proc

    def gateway(
        self, settings: Settings, url: str, projects: str = "", ready: bool = True, **extra: str
    ) -> Gateway:
        """``python -m web.mqtt`` on ``url``, its health endpoint on a free port; with
        ``ready``, once /healthz says connected and subscribed."""
        port = free_port()
        env = child_env(
            settings,
            MIA_MQTT_URL=url,
            MIA_MQTT_CLIENT_ID=f"mia-gateway-test-{uuid.uuid4().hex[:8]}",
            MIA_MQTT_HEALTH_PORT=str(port),
            MIA_PROJECTS_FILE=projects,
            MIA_REQUEST_TIMEOUT_S="30",
        )
        env.update(extra)
        log = self.tmp_path / f"gateway-{len(self.started)}.log"
        proc = spawn(gateway_argv(), env, log=log, cwd=ROOT)
        self.started.append(proc)
        found = Gateway(proc, port, log)
        if ready:
            found.wait_ready()
        return found

    def close(self) -> None:
        for proc in reversed(self.started):  # gateways before their brokers
            stop(proc)


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    health_port: int
    log: Path

    def health(self) -> tuple[int, dict[str, Any]]:
        return healthz(self.health_port)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.health()[0] == 200 or self.proc.poll() is not None, timeout, "gw")
        assert self.proc.poll() is None, self.output()

    def wait_health(self, broker: str, timeout: float = 30) -> dict[str, Any]:
        """The health body once its ``broker`` is ``broker`` (503 until connected)."""
        found = wait_for(lambda: self.health()[1].get("broker") == broker, timeout, broker)
        assert found
        return self.health()[1]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """(status, body) of the gateway's GET /healthz; (0, {}) while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def paho_client(url: str, tls: Tls | None = None, v5: bool = False) -> mqtt.Client:
    """A client (not connected) with the URL's user and password and ``tls``."""
    parsed = urlparse(url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    if parsed.username:
        client.username_pw_set(unquote(parsed.username), unquote(parsed.password or ""))
    if tls is not None:
        client.tls_set(
            ca_certs=str(tls.ca),
            certfile=str(tls.cert) if tls.cert else None,
            keyfile=str(tls.key) if tls.key else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return client


def try_connect(url: str, tls: Tls | None = None, timeout: float = 10) -> str:
    """``connected``, the broker's reason for refusing (``Not authorized``...), or
    ``closed: ...`` when the connection ends before any CONNACK."""
    parsed = urlparse(url)
    client = paho_client(url, tls)
    outcome: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: outcome.put(
        "connected" if not rc.is_failure else str(rc)
    )
    client.on_disconnect = lambda _c, _u, _f, rc, _p: outcome.put(f"closed: {rc}")
    try:
        client.connect(parsed.hostname or "127.0.0.1", parsed.port or PORTS[parsed.scheme])
    except OSError as exc:  # a TLS handshake refused
        return f"closed: {exc}"
    client.loop_start()
    try:
        return outcome.get(timeout=timeout)
    finally:
        client.loop_stop()
        client.disconnect()


class Session:
    """A connected client that collects what arrives on its subscriptions."""

    def __init__(
        self, url: str, topics: list[str], tls: Tls | None = None, v5: bool = False
    ) -> None:
        parsed = urlparse(url)
        self.client = paho_client(url, tls, v5)
        self.answers: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.acks: queue.Queue[tuple[int, Any]] = queue.Queue()
        events: queue.Queue[Any] = queue.Queue()
        self.client.on_message = lambda _c, _u, m: self.answers.put(
            (m.topic, json.loads(m.payload))
        )
        self.client.on_connect = lambda _c, _u, _f, rc, _p: events.put(rc)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: events.put(codes)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.put((mid, rc))
        self.client.connect(parsed.hostname or "127.0.0.1", parsed.port or PORTS[parsed.scheme])
        self.client.loop_start()
        connected = events.get(timeout=10)
        assert not connected.is_failure, f"connect refused: {connected}"
        for topic in topics:
            self.client.subscribe(topic, qos=1)
            (granted,) = events.get(timeout=10)
            assert not granted.is_failure, f"subscription to {topic} refused: {granted}"

    def send(self, project: str, body: dict[str, Any] | bytes) -> Any:
        """Publish on ``{project}/user_input``; the PUBACK's reason code (MQTT 5 names a
        refusal, ``Not authorized``; MQTT 3.1.1 has none: ``Success``)."""
        payload = body if isinstance(body, bytes) else json.dumps(body)
        info = self.client.publish(f"{project}/user_input", payload, qos=1)
        info.wait_for_publish(10)
        while True:
            mid, rc = self.acks.get(timeout=10)
            if mid == info.mid:
                return rc

    def take(self, n: int, timeout: float = 30) -> list[tuple[str, dict[str, Any]]]:
        return [self.answers.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
