"""Load operations in flight, and waiting until a model is live on a device.

A load (``POST /api/v2/models/load``, ``MIA_AUTOLOAD``) is a Celery task on the device's
own queue: its task id is the operation id, its stored result the outcome
(``celery-task-meta-<op>``, which Celery's Redis backend also publishes on a channel of
that name). Every operation sent, load or unload, leaves ``<p>:op:<op>`` (its model and
device) for as long as its result is kept, so an id never issued is 404, not pending
forever. While a load runs, ``<p>:loading:<model>`` maps its op id to its device, so that
a request for the model finds the load in flight and waits for it instead of answering
503. The miner heartbeats as soon as the model is loaded, and that heartbeat announces
the device's new models on the events channel (``beat.lua``).

Waiting subscribes to the operations' result channels and to the events channel, then
reads the state again whenever either says something (and at least every
``RECHECK_S``), until the model is live, no load can still bring it, or the deadline
passes. The subscription comes before the first read, so no change falls between.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from tasks.errors import LoadFailed, LoadTimeout, NotFound
from tasks.keys import Keys, text
from web.fleet.miner_state import MinerState
from web.fleet.registry import Registry
from web.fleet.results import ResultWaiter, outcome

LOADING_TTL_S = 3600  # a record nobody settled goes with its key
RECHECK_S = 1.0  # a device that died publishes "gone" only on the next reap


@dataclass(frozen=True)
class Operation:
    op_id: str
    model_id: str
    device_id: str

    def view(self) -> dict[str, Any]:
        return {
            "op_id": self.op_id,
            "model_id": self.model_id,
            "device_id": self.device_id,
            "status_url": f"/api/v2/operations/{self.op_id}",
        }


class Operations:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        registry: Registry,
        waiter: ResultWaiter,
        kept_s: int = 86400,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._registry = registry
        self._waiter = waiter
        self._kept_s = kept_s  # MIA_RESULT_TTL_S: an operation is known as long as its result

    def status(self, op_id: str) -> dict[str, Any]:
        """``pending``, ``done`` (with the miner's result) or ``failed`` (with its error)."""
        meta = self._waiter.fetch(op_id)
        if meta is None:
            return {"op_id": op_id, "status": "pending"}
        try:
            return {"op_id": op_id, "status": "done", "result": outcome(meta)}
        except Exception as exc:  # noqa: BLE001 - the miner's failure, reported
            return {"op_id": op_id, "status": "failed", "error": str(exc)}

    def describe(self, op_id: str) -> dict[str, Any]:
        """``GET /api/v2/operations/<op_id>``: ``status`` with the operation's action, model
        and device; NotFound for an id never issued (or older than its result)."""
        raw = self._redis.get(self._keys.operation(op_id))
        if raw is None:
            raise NotFound(f"no operation {op_id!r}", op_id=op_id)
        return {**self.status(op_id), **json.loads(raw)}

    def record(self, op: Operation, action: str) -> None:
        """Note an operation before its command is sent (``forget`` it if the send
        fails); a load is also noted as in flight for its model."""
        what = {"action": action, "model_id": op.model_id, "device_id": op.device_id}
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.operation(op.op_id), json.dumps(what), ex=self._kept_s)
        if action == "load":
            key = self._keys.loading(op.model_id)
            pipe.hset(key, op.op_id, op.device_id)
            pipe.expire(key, LOADING_TTL_S)
        pipe.execute()

    def forget(self, ops: list[Operation]) -> None:
        """Loads no longer in flight (settled, or never sent)."""
        for op in ops:
            self._redis.hdel(self._keys.loading(op.model_id), op.op_id)

    def unsent(self, op: Operation) -> None:
        """An operation whose command could not be sent: it never existed."""
        self.forget([op])
        self._redis.delete(self._keys.operation(op.op_id))

    def pending(self, model_id: str, device_id: str | None = None) -> list[Operation]:
        """Loads of ``model_id`` still running (on ``device_id`` if given); the records of
        settled ones are dropped on the way."""
        found = self._redis.hgetall(self._keys.loading(model_id))
        ops = [Operation(text(op), model_id, text(device)) for op, device in found.items()]
        ops = [op for op in ops if device_id in (None, op.device_id)]
        running = [op for op in ops if self.status(op.op_id)["status"] == "pending"]
        self.forget([op for op in ops if op not in running])
        return running

    def wait_live(self, ops: list[Operation], device_id: str | None, deadline: float) -> MinerState:
        """The device (``device_id``, else any) that has the model of ``ops`` live, once
        it does; LoadFailed when none of ``ops`` can still bring it, LoadTimeout at
        ``deadline`` (``time.monotonic()``), naming the first operation."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self._keys.events, *(self._keys.result(op.op_id) for op in ops))
            while True:
                found = self._live(ops, device_id)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LoadTimeout(
                        f"model {ops[0].model_id!r} was not live in time; its load goes on "
                        "(follow status_url)",
                        **ops[0].view(),
                    )
                pubsub.get_message(timeout=min(remaining, RECHECK_S))
        finally:
            pubsub.close()

    def _live(self, ops: list[Operation], device_id: str | None) -> MinerState | None:
        model_id = ops[0].model_id
        live = self._registry.live()
        for device in live:
            if model_id in device.models and device_id in (None, device.miner_id):
                return device
        alive = {d.miner_id for d in live}
        failures = [self._failure(op, alive) for op in ops]
        if all(failures):
            self.forget(ops)
            raise LoadFailed(
                f"loading model {model_id!r} on device {ops[0].device_id!r} failed: {failures[0]}",
                **ops[0].view(),
            )
        return None

    def _failure(self, op: Operation, alive: set[str]) -> str:
        """Why ``op`` can no longer bring its model live ('' while it still may)."""
        if op.device_id not in alive:
            return f"device {op.device_id!r} is gone"
        found = self.status(op.op_id)
        return str(found["error"]) if found["status"] == "failed" else ""
