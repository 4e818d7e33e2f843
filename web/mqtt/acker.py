"""The acker: each MQTT message is acknowledged once its reply is published (its PUBACK).

Separate from the gateway's workers because it waits on a thread of its own: a worker is
free again as soon as its answer is handed to the network loop (a worker that waited for
its PUBACK itself would wait on the very loop that waits for it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from web.mqtt.stats import Stats

log = logging.getLogger(__name__)

PUBACK_WAIT_S = 10.0


@dataclass
class Done:
    """A message worked on: acknowledge it once ``reply`` (if any) is published."""

    message: mqtt.MQTTMessage
    reply: mqtt.MQTTMessageInfo | None
    started: float
    ok: bool
    limited: bool = False


class Acker:
    """Acknowledges the messages handed to it, in turn, on ``client``."""

    def __init__(self, client: mqtt.Client, stats: Stats) -> None:
        self.client = client
        self.stats = stats
        self._done: queue.Queue[Done | None] = queue.Queue()
        self._thread = threading.Thread(target=self._acknowledge, name="mqtt-acker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, done: Done) -> None:
        """Acknowledge ``done.message`` once its reply is published."""
        self._done.put(done)

    def finish(self) -> None:
        """Acknowledge what is left, then end."""
        self._done.put(None)
        self._thread.join(PUBACK_WAIT_S + 5)

    def _acknowledge(self) -> None:
        while (done := self._done.get()) is not None:
            if done.reply is not None and not published(done.reply):
                # Not acknowledged: the broker delivers the message again when the
                # connection is back (the turn may then run twice; none is lost).
                log.warning("reply to %s not published: not acknowledged", done.message.topic)
                self.stats.abandoned()
                continue
            self.client.ack(done.message.mid, done.message.qos)
            latency_ms = (time.perf_counter() - done.started) * 1000
            self.stats.acknowledged(done.ok, latency_ms, done.limited)


def published(reply: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker took ``reply`` (its PUBACK came) within ``PUBACK_WAIT_S``."""
    try:
        reply.wait_for_publish(timeout=PUBACK_WAIT_S)
    except (ValueError, RuntimeError) as exc:  # not queued: paho says why
        log.warning("reply not published: %s", exc)
        return False
    return reply.is_published()
