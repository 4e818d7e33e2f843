"""The MQTT front door: the assistant for clients that speak MQTT.

    MIA_MQTT_URL=mqtt://127.0.0.1:1883 python -m web.mqtt

Subscribes to ``+/user_input`` (every project; an unknown one gets an error) and answers on
``{project}/assistant_response/{session_id}`` (``turns``: payloads, streaming). Errors go
on the same topic as ``{"error", "code", "field"?...}``, so a client is never left
waiting; a message with no session id has no topic its client knows, and is logged.
The turn goes through the same ``chat_service.Assistant``, push path, Redis sessions,
priorities and metrics as HTTP. docs/mqtt.md is the client's guide.

Nothing received is lost: QoS 1 both ways, a persistent MQTT v5 session (fixed client id,
``clean_start=False``) and manual acknowledgement: a message is acknowledged only
once its answer is published (the broker's PUBACK), so if the gateway dies first the
broker delivers it again when the gateway comes back (a reply the broker never took
leaves its message unacknowledged too). Nothing stale is replayed either: the session
expires ``MIA_MQTT_SESSION_EXPIRY_S`` after the gateway goes (Session Expiry Interval),
and with it what was queued for it. Up to ``MIA_MQTT_IN_FLIGHT``
messages are worked on at once (the broker sends no more unacknowledged ones: Receive
Maximum); beyond that the network loop waits for a free worker,
which stops reading from the broker: back-pressure instead of an unbounded queue. A
message for a session whose turn is in hand waits without a worker (``lanes``). The
wait for PUBACKs is one thread of its own (the acker), so a worker is free again as soon
as its answer is handed to the network loop (``acker``).
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

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chat_service.sessions import LOCK_SLACK_S
from tasks import logs
from tasks.errors import ConfigError, MiaError
from tasks.lua import Scripts
from tasks.settings import Settings
from web.common.parsing import SESSION_ID
from web.mqtt import health, stats
from web.mqtt.acker import Acker, Done
from web.mqtt.broker import Broker, no_delay, session
from web.mqtt.lanes import Lanes
from web.mqtt.limits import RateLimit, RateLimited
from web.mqtt.turns import INPUT, OUTPUT, BadInput, Turns, read_payload
from web.services import Services, build_services

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.settings = settings
        if settings.mqtt_in_flight < 1 or settings.mqtt_stats_s <= 0:
            raise ConfigError("MIA_MQTT_IN_FLIGHT must be 1 or more, MIA_MQTT_STATS_S above 0")
        self.broker = Broker.from_settings(settings)
        self.services = services or build_services(settings)
        self.projects = list(self.services.assistant.projects)
        guests = self.services.sessions_redis  # rate buckets live with the sessions
        limit = RateLimit(
            guests,
            Scripts(guests),
            self.services.keys,
            settings.mqtt_rate_limit,
            settings.mqtt_rate_period_s,
            settings.mqtt_rate_burst,
        )
        busy_s = 2 * settings.request_timeout_s + LOCK_SLACK_S  # the session lock's life
        self.turns = Turns(self.services.assistant, limit, settings.max_message_chars, busy_s)
        self.stats = stats.Stats()
        self.health = health.Health(self.stats)
        client_id = settings.mqtt_client_id or f"mia-gateway-{socket.gethostname()}"
        self._session = session(settings.mqtt_session_expiry_s, settings.mqtt_in_flight)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.broker.configure(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._slots = threading.BoundedSemaphore(settings.mqtt_in_flight)
        self._lanes: Lanes[tuple[mqtt.MQTTMessage, float]] = Lanes()
        self._pool = ThreadPoolExecutor(settings.mqtt_in_flight, thread_name_prefix="mqtt")
        self.acker = Acker(self.client, self.stats)
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Connect (retrying until the broker answers) and serve until ``stop()``."""
        self.acker.start()
        while not self._stop.is_set():
            try:
                self.client.connect(
                    self.broker.host,
                    self.broker.port,
                    keepalive=30,
                    clean_start=False,  # and on each reconnection: the session is resumed
                    properties=self._session,
                )
                break
            except OSError as exc:  # ssl.SSLError too: a TLS handshake refused
                log.warning("MQTT broker %s does not answer (%s)", self.broker, exc)
                self._stop.wait(1.0)
        self.client.loop_start()  # reconnects and resubscribes by itself (on_connect)
        log.info("MQTT gateway on %s for %s", self.broker, ", ".join(self.projects))
        period = self.settings.mqtt_stats_s
        while not self._stop.wait(period):
            log.info(stats.line(self.stats.rotate(), period))
        self._pool.shutdown(wait=True)
        self.acker.finish()  # acknowledges what is left, then ends
        self.client.loop_stop()
        self.client.disconnect()

    def stop(self) -> None:
        self._stop.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT connect refused by %s: %s", self.broker, reason)
            self.health.connection("refused")
            return
        resumed = "resumed (what came meanwhile follows)" if flags.session_present else "new"
        log.info("MQTT session on %s: %s", self.broker, resumed)
        self.health.connection("connected")
        no_delay(client)
        # Every project's topic, and unknown ones too: they get an error reply, not silence.
        client.subscribe(INPUT.format(project="+"), qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.health.lost()
        if not self._stop.is_set():
            log.warning("MQTT connection to %s lost (%s): reconnecting", self.broker, reason)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, codes: Any, _p: Any) -> None:
        granted = not any(code.is_failure for code in codes)
        if granted:
            log.info("subscribed to %s", INPUT.format(project="+"))
        else:
            log.error("the broker refused the subscription to %s", INPUT.format(project="+"))
        self.health.subscription(granted)  # after the log line: who reads one finds both

    # -- messages --------------------------------------------------------------------

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.stats.received()
        if not self._lanes.enter(lane_of(message), (message, time.perf_counter())):
            return  # behind its session's turn in hand (web.mqtt.lanes): no worker held
        self._slots.acquire()  # back-pressure: the network loop waits for a free worker
        self._run(message, time.perf_counter())

    def _run(self, message: mqtt.MQTTMessage, started: float) -> None:
        """Work on ``message`` with the slot the caller holds."""
        try:
            self._pool.submit(self._handle, message, started)
        except RuntimeError:  # shutting down: not acknowledged, the broker redelivers it
            self._slots.release()
            self.stats.abandoned()

    def _handle(self, message: mqtt.MQTTMessage, started: float) -> None:
        project = message.topic.split("/", 1)[0]
        session_id: Any = None
        request_id = ""
        reply: mqtt.MQTTMessageInfo | None = None
        ok = limited = False
        try:
            body = read_payload(message.payload)
            session_id = body.get("session_id")
            request_id = logs.accept_request_id(body.get("request_id"))
            turn = self.turns.answer(project, body, request_id, self._publish)
            reply = self._publish(
                OUTPUT.format(project=project, session_id=turn["session_id"]), turn
            )
            ok = True
        except (BadInput, MiaError) as exc:
            limited = isinstance(exc, RateLimited)
            error = exc.to_dict() if isinstance(exc, MiaError) else {"error": str(exc)}
            reply = self._error(project, session_id, request_id, error, message.topic)
        except Exception:  # noqa: BLE001 - never crash the gateway on one message
            log.exception("message on %s failed", message.topic)
            error = {"error": "internal error", "code": "internal"}
            reply = self._error(project, session_id, request_id, error, message.topic)
        finally:  # the answer is handed over: the acker waits for its PUBACK
            self.acker.put(Done(message, reply, started, ok, limited))
            queued = self._lanes.leave(lane_of(message))
            if queued is None:
                self._slots.release()
            else:  # the session's next message, on this worker's slot
                self._run(*queued)

    def _error(
        self, project: str, session_id: Any, request_id: str, error: dict[str, Any], topic: str
    ) -> mqtt.MQTTMessageInfo | None:
        if not (isinstance(session_id, str) and SESSION_ID.fullmatch(session_id)):
            log.warning(  # no topic the client knows to answer on (web.mqtt.turns)
                "bad message on %s (no session id to answer, request %s): %s",
                topic,
                request_id or "-",
                error["error"],
            )
            return None
        body = {**error, "request_id": request_id} if request_id else error
        return self._publish(OUTPUT.format(project=project, session_id=session_id), body)

    def _publish(self, topic: str, body: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, json.dumps(body), qos=1)


def lane_of(message: mqtt.MQTTMessage) -> tuple[str, str] | None:
    """(project, session id) of a message that names its session; None for any other."""
    try:
        session_id = read_payload(message.payload).get("session_id")
    except BadInput:
        return None
    if not (isinstance(session_id, str) and SESSION_ID.fullmatch(session_id)):
        return None
    return message.topic.split("/", 1)[0], session_id


def main() -> int:
    settings = Settings.from_env()
    logs.configure(fmt=settings.log_format)
    if not settings.mqtt_url:
        print("set MIA_MQTT_URL (e.g. mqtt://127.0.0.1:1883)")
        return 2
    gateway = Gateway(settings)
    server = None
    if settings.mqtt_health_port:
        host, port = settings.mqtt_health_host, settings.mqtt_health_port
        try:
            server = health.serve(host, port, gateway.health.report)
        except OSError as exc:
            log.error("the health endpoint cannot listen on %s:%s: %s", host, port, exc)
            return 2
        log.info("health: http://%s:%s%s", host, server.port, health.PATH)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the messages in hand", signum)
        gateway.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        gateway.run()
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":  # python -m web.mqtt.gateway, as python -m web.mqtt
    raise SystemExit(main())
