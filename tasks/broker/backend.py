"""The result backend: Celery's Redis backend with a first-result-wins store.

A miner stores each result through it (``celery-task-meta-<job>``, published on the
channel of the same name); ``store_along`` lets the miner send that store in the
same round trip as its own bookkeeping (``miners.bookkeeping``). With replicas to wait
for (``tasks.replication``), a WAIT follows the store in that round trip, and a store
no replica confirmed raises ``Unconfirmed``: Celery stores it again.
``SentinelResultBackend`` is the same on a ``sentinel://`` URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
import redis.client
from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError
from redis.commands.core import Script

from tasks.cluster import owner_pool
from tasks.lua import source
from tasks.replication import Replicas
from tasks.sentinel import is_sentinel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreCall:
    """One result's store, for a caller that sends it with steps of its own."""

    queue: Callable[[redis.client.Pipeline], None]  # on a pipeline, by the script's hash
    alone: Callable[[], Any]  # on its own, WAIT included (loads the script again if Redis lost it)
    replicas: Replicas  # the WAIT to queue after ``queue``'s store, and its check


StoreSteps = Callable[[StoreCall, str], None]  # (the store, the result's state)
_along = threading.local()


def store_along(steps: StoreSteps) -> None:
    """Have ``steps`` send the next result this thread stores, in a round trip of its
    own making (a miner's after-job bookkeeping: ``miners.bookkeeping``). ``steps``
    must put the store on Redis or raise; it is used once."""
    _along.steps = steps


def take_along() -> StoreSteps | None:
    """The steps ``store_along`` left for this thread, if no store took them yet."""
    steps: StoreSteps | None = _along.__dict__.pop("steps", None)
    return steps


class ResultBackend(RedisBackend):
    """Celery's Redis backend, with two changes.

    - No per-call subscription when a job is sent: callers wait through ResultWaiter.
    - Storing is one Lua call that keeps the first final result (``store_result.lua``)
      where Celery reads the current state, then writes: two round trips, and a race
      between two runs of the same job. A miner may send that call in a pipeline
      with its own bookkeeping (``store_along``).
    - The result is published only to the web process that waits for it (the job's
      ``reply_to`` channel), not on a channel per key that every process hears.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def _get_pool(self, **params: Any) -> Any:
        """Celery's pool; on a Redis Cluster (``cluster_url`` in
        ``result_backend_transport_options``), one whose connections follow the node
        that owns the job path's slot (``tasks.cluster``), where results live."""
        cluster = self._transport_options.get("cluster_url")
        if not cluster:
            return super()._get_pool(**params)
        return owner_pool(cluster, self._transport_options["global_keyprefix"], params)

    @cached_property
    def _store_first(self) -> Script:
        script: Script = self.client.register_script(source("store_result"))
        return script

    @cached_property
    def replicas(self) -> Replicas:
        """The WAIT after each store (``wait_replicas``, ``wait_timeout_ms`` in
        ``result_backend_transport_options``; none by default)."""
        options = self._transport_options
        wanted, timeout_ms = options.get("wait_replicas", 0), options.get("wait_timeout_ms", 500)
        return Replicas(self.client, int(wanted), int(timeout_ms))

    def _store_confirmed(self, keys: list[str], args: list[Any]) -> None:
        """The store, and a WAIT for replicas after it in the same round trip."""
        script = self._store_first
        if not self.replicas.wanted:
            script(keys=keys, args=args)
            return
        for _ in range(2):  # again once if Redis lost the script (a restart, a failover)
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pending = self.replicas.queue(pipe)
            replies = pipe.execute(raise_on_error=False)
            pending.take(replies)
            if not isinstance(replies[0], redis.exceptions.NoScriptError):
                break
            self.client.script_load(script.script)
        if isinstance(replies[0], Exception):
            raise replies[0]
        self.replicas.check(pending, f"the result {keys[0]}")

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        keys = [self.get_key_for_task(task_id)]
        args = [value, int(expires or 0), reply_channel(request)]
        steps = take_along()
        if steps is None:
            self._store_confirmed(keys, args)
            return result
        script = self._store_first
        steps(
            StoreCall(
                queue=lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args),
                alone=lambda: self._store_confirmed(keys, args),
                replicas=self.replicas,
            ),
            state,
        )
        return result


def reply_channel(request: Any) -> str:
    """Where the web process waiting for this task hears its result: a generation job's
    ``reply_to`` (``tasks.jobs.Job``); "" for anything else (a model load is awaited
    on its key's own channel, ``web.fleet.operations``)."""
    args = getattr(request, "args", None)
    if args and isinstance(args[0], dict):
        return str(args[0].get("reply_to") or "")
    return ""


class SentinelResultBackend(ResultBackend, SentinelBackend):
    """ResultBackend on the master that Redis Sentinels name (Celery's SentinelBackend:
    ``master_name`` and ``sentinel_kwargs`` in ``result_backend_transport_options``)."""


def backend_url(redis_url: str) -> str:
    """The ``result_backend`` setting that selects ResultBackend (SentinelResultBackend
    for a ``sentinel://`` URL, which must be normalized: ``tasks.sentinel``) on ``redis_url``."""
    backend = "SentinelResultBackend" if is_sentinel(redis_url) else "ResultBackend"
    return f"tasks.broker.backend:{backend}+{redis_url}"
