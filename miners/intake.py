"""Whether this miner takes work off ``shared``: only with a model loaded, and not drained.

A miner always consumes its own queue ``gpu-<id>``: model loads and unloads come that
way, and so do the jobs dispatch gave it before a drain (it runs them: they were
accepted for it). ``shared`` it consumes after its own only while it can serve a job
and may take new work. With no model loaded any job would fail on it; drained
(``POST /api/v2/miners/<id>/drain``, or the anomaly detector's ``MIA_AUTO_DRAIN``) it
takes nothing new. Dispatch skips it in both cases (``reserve.lua``).

The switch is Celery's own: the worker's consumer cancels or adds the queue
(``Consumer.cancel_task_queue`` / ``add_task_queue``, what the remote-control commands
``cancel_consumer`` / ``add_consumer`` run), on the consumer's own thread
(``call_soon``). The heartbeat says ``draining`` once that has happened, so
``GET /metrics/gpus`` showing ``draining`` means the miner takes no more ``shared`` work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from tasks.keys import SHARED_QUEUE

log = logging.getLogger(__name__)


class Intake:
    """What this miner should consume, and what its consumer does now."""

    def __init__(self, miner_id: str) -> None:
        self.miner_id = miner_id
        self.on_change: Callable[[], None] = lambda: None  # heartbeat at once
        self._lock = threading.Lock()
        self._drained = False
        self._has_model = True
        self._consumer: Any = None
        self._taking_shared = False  # what the consumer does (changed on its thread)

    def wants_shared(self) -> bool:
        with self._lock:
            return self._has_model and not self._drained

    @property
    def draining(self) -> bool:
        """Drained, and the consumer no longer takes ``shared`` (the heartbeat's status)."""
        with self._lock:
            return self._drained and not self._taking_shared

    def started(self, consumer: Any, taking_shared: bool) -> None:
        """The worker consumes now (``worker_ready``): from here on, switch it."""
        with self._lock:
            self._consumer, self._taking_shared = consumer, taking_shared
        self._switch_soon()

    def drained(self, drained: bool) -> None:
        with self._lock:
            changed, self._drained = drained != self._drained, drained
        if changed:
            log.warning(
                "miner %s %s", self.miner_id, "drained: no new work" if drained else "undrained"
            )
            self._switch_soon()

    def has_model(self, present: bool) -> None:
        with self._lock:
            changed, self._has_model = present != self._has_model, present
        if changed:
            self._switch_soon()

    def _switch_soon(self) -> None:
        with self._lock:
            consumer = self._consumer
        if consumer is not None:
            consumer.call_soon(self._switch)

    def _switch(self) -> None:
        """On the consumer's thread: consume ``shared`` exactly while it is wanted."""
        want = self.wants_shared()
        with self._lock:
            consumer, taking = self._consumer, self._taking_shared
        if want != taking:
            if want:
                consumer.add_task_queue(SHARED_QUEUE)
            else:
                consumer.cancel_task_queue(SHARED_QUEUE)
            with self._lock:
                self._taking_shared = want
            log.info("miner %s %s", self.miner_id, "takes shared work" if want else "left shared")
        self.on_change()
