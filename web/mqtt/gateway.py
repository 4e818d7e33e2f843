"""The MQTT front door: the assistant for clients that speak MQTT.

    MIA_MQTT_URL=mqtt://127.0.0.1:1883 python -m web.mqtt.gateway

Subscribes to ``+/user_input`` (every project; an unknown one gets an error) and answers on
``{project}/assistant_response/{session_id}``. In: ``{"session_id"?, "message",
"priority"?, "request_id"?}``; out: ``{"session_id", "request_id", "class",
"response", "timings"}``, or ``{"error", ...}`` on the same topic, so a client is
never left waiting. The turn goes through the same ``chat_service.Assistant``, push
path, Redis sessions, priorities and metrics as HTTP.

Nothing received is lost: QoS 1 both ways, a persistent broker session (fixed
client id, ``clean_session=False``) and manual acknowledgement: a message is
acknowledged only after its answer is published, so if the gateway dies first the
broker delivers it again when the gateway comes back. Up to ``MIA_MQTT_IN_FLIGHT``
messages are handled at once; beyond that the network loop waits for a free worker,
which stops reading from the broker: back-pressure instead of an unbounded queue.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tasks import logs
from tasks.errors import MiaError
from tasks.settings import Settings
from web.common.parsing import SESSION_ID, parse_turn
from web.services import Services, build_services

log = logging.getLogger(__name__)

INPUT = "{project}/user_input"
OUTPUT = "{project}/assistant_response/{session_id}"
MAX_PAYLOAD = 64 * 1024
STATS_S = 60.0


class BadInput(ValueError):
    pass


def broker_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts connections at the broker URL ``mqtt://host:port``."""
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 1883), timeout_s
        ):
            return True
    except OSError:
        return False


def no_delay(client: mqtt.Client) -> None:
    """Small MQTT packets go out at once: without it, Nagle's algorithm and delayed ACKs
    hold a QoS 1 exchange for tens of milliseconds."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Gateway:
    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.settings = settings
        self.services = services or build_services(settings)
        self.projects = list(self.services.assistant.projects)
        url = urlparse(settings.mqtt_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 1883
        client_id = settings.mqtt_client_id or f"mia-gateway-{socket.gethostname()}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        if url.username:
            self.client.username_pw_set(url.username, url.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._slots = threading.BoundedSemaphore(settings.mqtt_in_flight)
        self._pool = ThreadPoolExecutor(settings.mqtt_in_flight, thread_name_prefix="mqtt")
        self._counts = {"requests": 0, "errors": 0, "latency_ms": 0.0}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Connect (retrying until the broker answers) and serve until ``stop()``."""
        while not self._stop.is_set():
            try:
                self.client.connect(self._host, self._port, keepalive=30)
                break
            except OSError as exc:
                log.warning("MQTT broker %s:%s does not answer (%s)", self._host, self._port, exc)
                self._stop.wait(1.0)
        self.client.loop_start()  # reconnects and resubscribes by itself (on_connect)
        log.info("MQTT gateway on %s:%s for %s", self._host, self._port, ", ".join(self.projects))
        while not self._stop.wait(STATS_S):
            self._log_stats()
        self._pool.shutdown(wait=True)
        self.client.loop_stop()
        self.client.disconnect()

    def stop(self) -> None:
        self._stop.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused: %s", reason)
            return
        no_delay(client)
        # Every project's topic, and unknown ones too: they get an error reply, not silence.
        client.subscribe(INPUT.format(project="+"), qos=1)
        log.info("subscribed to %s", INPUT.format(project="+"))

    # -- messages --------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._slots.acquire()  # back-pressure: the network loop waits for a free worker
        try:
            self._pool.submit(self._handle, message)
        except RuntimeError:  # shutting down: the broker redelivers it later
            self._slots.release()

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        started = time.perf_counter()
        project = message.topic.split("/", 1)[0]
        session_id = None
        ok = False
        try:
            body = self._parse(message.payload)
            session_id = body.get("session_id")
            answer = self._answer(project, body)
            session_id = answer["session_id"]
            self._publish(project, session_id, answer)
            ok = True
        except (BadInput, MiaError) as exc:
            error = exc.to_dict() if isinstance(exc, MiaError) else {"error": str(exc)}
            if isinstance(session_id, str) and SESSION_ID.match(session_id):
                self._publish(project, session_id, error)
            else:
                log.warning("bad message on %s (no session id to answer): %s", message.topic, exc)
        except Exception:  # noqa: BLE001 - never crash the gateway on one message
            log.exception("message on %s failed", message.topic)
            if isinstance(session_id, str) and SESSION_ID.match(session_id):
                self._publish(project, session_id, {"error": "internal error", "code": "internal"})
        finally:
            self.client.ack(message.mid, message.qos)  # only now: answered (or answered with why)
            self._slots.release()
            with self._lock:
                self._counts["requests"] += 1
                self._counts["errors"] += 0 if ok else 1
                self._counts["latency_ms"] += (time.perf_counter() - started) * 1000

    def _parse(self, payload: bytes | bytearray) -> dict[str, Any]:
        if len(payload) > MAX_PAYLOAD:
            raise BadInput(f"payload over {MAX_PAYLOAD} bytes")
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            raise BadInput("payload is not JSON") from None
        if not isinstance(body, dict):
            raise BadInput("payload must be a JSON object")
        return body

    def _answer(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        assistant = self.services.assistant
        assistant.project(project)  # NotFound for an unknown project
        message, session_id, priority, _stream = parse_turn(body, self.settings.max_message_chars)
        request_id = logs.accept_request_id(body.get("request_id"))
        token = logs.request_id.set(request_id)
        try:
            turn = assistant.chat(project, message, session_id, priority)
        finally:
            logs.request_id.reset(token)
        return {
            "session_id": turn["session_id"],
            "request_id": request_id,
            "class": turn["class"],
            "response": turn["response"],
            "actions": turn["actions"],
            "timings": turn["timings"],
        }

    def _publish(self, project: str, session_id: str, body: dict[str, Any]) -> None:
        topic = OUTPUT.format(project=project, session_id=session_id)
        info = self.client.publish(topic, json.dumps(body), qos=1)
        info.wait_for_publish(timeout=10)

    def _log_stats(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {"requests": 0, "errors": 0, "latency_ms": 0.0}
        n = int(counts["requests"])
        log.info(
            "mqtt summary: %d requests, average %.1f ms, %d errors",
            n,
            counts["latency_ms"] / n if n else 0.0,
            int(counts["errors"]),
        )


def main() -> int:
    settings = Settings.from_env()
    logs.configure(fmt=settings.log_format)
    if not settings.mqtt_url:
        print("set MIA_MQTT_URL (e.g. mqtt://127.0.0.1:1883)")
        return 2
    gateway = Gateway(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the messages in hand", signum)
        gateway.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    gateway.run()
    return 0
