"""The MQTT hop: the same assistant turn over MQTT (gateway) and over HTTP, in one run."""

from __future__ import annotations

import http.client
import json
import queue
import time
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.report import percentile
from web.mqtt.broker import no_delay

MESSAGE = "What time do you open?"


def over_mqtt(url: str, samples: int) -> list[float]:
    parsed = urlparse(url)
    answers: queue.Queue[bytes | bytearray] = queue.Queue()
    ready: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, m: answers.put(m.payload)
    client.on_subscribe = lambda *_: ready.put(True)
    client.on_connect = lambda c, *_: no_delay(c)
    client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
    client.loop_start()
    sid = f"bench-{uuid.uuid4().hex[:8]}"
    client.subscribe(f"restaurant/assistant_response/{sid}", qos=1)
    ready.get(timeout=10)
    out = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            body = json.dumps({"session_id": sid, "message": MESSAGE})
            client.publish("restaurant/user_input", body, qos=1)
            answer = json.loads(answers.get(timeout=30))
            out.append((time.perf_counter() - started) * 1000)
            if "error" in answer:
                raise RuntimeError(f"the gateway answered an error: {answer}")
    finally:
        client.loop_stop()
        client.disconnect()
    return out


def over_http(host: str, port: int, samples: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    sid = f"bench-{uuid.uuid4().hex[:8]}"
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        body = json.dumps({"session_id": sid, "message": MESSAGE})
        conn.request(
            "POST", "/assistant/restaurant/chat", body, {"content-type": "application/json"}
        )
        response = conn.getresponse()
        response.read()
        out.append((time.perf_counter() - started) * 1000)
    conn.close()
    return out


def summary(mqtt_ms: list[float], http_ms: list[float]) -> dict[str, float]:
    return {
        "mqtt_turn_p50_ms": round(percentile(mqtt_ms, 50), 3),
        "http_turn_p50_ms": round(percentile(http_ms, 50), 3),
        "mqtt_hop_p50_ms": round(percentile(mqtt_ms, 50) - percentile(http_ms, 50), 3),
    }
