"""Publishing ``mia.generate``: the message Celery's ``send_task`` would publish,
without the machinery around it.

``send_task`` spends about 0.2 ms of CPU per job beyond the ``LPUSH`` itself (a
producer from the pool, the router, Celery's and kombu's option handling; measured
257 against 106 µs per publish with this module, docs/performance.md): the largest
cost of the web tier's own on ``/chat/direct``. Here the message is built by
``tasks.broker.messages.task_message`` (the same headers and properties as Celery
5.7's, which ``tests/test_publish.py`` compares with ``send_task``'s) and handed to
the broker channel's ``_put``, as kombu would: the priority step's list, and the
``WAIT`` for a replica inside ``tasks.broker.transport.confirming``.

Configurations whose message differs (signed bodies, ``MIA_MESSAGE_SIGNING``: the
``auth`` serializer; another protocol, compression or routes) publish through
``send_task`` as before.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu.utils.json import dumps

from tasks.broker.layout import step_suffix
from tasks.broker.messages import RESERVED_HEADER, argsrepr, task_message
from tasks.jobs import GENERATE, Job
from tasks.selector import Publish


def builds_celerys_message(celery: Celery) -> bool:
    """Whether ``task_message`` is what ``send_task`` would publish with this app's
    configuration: JSON, protocol 2, no compression, no routes, persistent."""
    conf = celery.conf
    return (
        conf.task_serializer == "json"
        and conf.task_protocol == 2
        and not conf.task_compression
        and not conf.task_routes
        and conf.task_default_delivery_mode in ("persistent", 2)
    )


class Publisher:
    """Publishes ``mia.generate`` messages on one broker channel per process."""

    def __init__(self, celery: Celery) -> None:
        self._celery = celery
        self._direct = builds_celerys_message(celery)
        self._origin = anon_nodename()
        self._lock = threading.Lock()
        self._channel: Any = None
        self._pid = 0

    def send(self, job: Job, queue: str, priority: int, headers: dict[str, str]) -> None:
        """Publish ``job`` on ``queue`` with kombu ``priority`` and extra ``headers``."""
        if not self._direct:
            self._celery.send_task(
                GENERATE,
                args=(job.to_payload(),),
                queue=queue,
                task_id=job.job_id,
                priority=priority,
                retry=False,
                declare=[],  # published on the default exchange: no bindings needed
                headers=headers or None,
                kwargsrepr="{}",
                argsrepr=argsrepr(job),
            )
            return
        message = task_message(job, queue, priority, headers, self._origin, self._celery.thread_oid)
        self._broker_channel()._put(queue, message)

    def fused(self, job: Job, priority: int, headers: dict[str, str]) -> Publish | None:
        """The message of ``job`` for ``reserve.lua`` to publish where it chooses, in
        the same call (``tasks.selector.Publish``); None where this app's message is
        not built here (``send_task`` publishes it). Its queue and the miner whose slot
        it holds are placeholders in it; the miner is named in the ``mia_reserved``
        header, since the body (base64) cannot be filled in (``miners.tasks``)."""
        if not self._direct:
            return None
        token = uuid.uuid4().hex
        queue_token, miner_token = f"mia-queue-{token}", f"mia-miner-{token}"
        headers = {**headers, RESERVED_HEADER: miner_token}
        message = task_message(
            job, queue_token, priority, headers, self._origin, self._celery.thread_oid
        )
        return Publish(dumps(message), queue_token, miner_token, step_suffix(priority))  # type: ignore[no-untyped-call]

    def _broker_channel(self) -> Any:
        """The broker channel of this process (a forked child opens its own)."""
        if self._channel is None or self._pid != os.getpid():
            with self._lock:
                if self._channel is None or self._pid != os.getpid():
                    self._channel = self._celery.connection_for_write().default_channel
                    self._origin = anon_nodename()
                    self._pid = os.getpid()
        return self._channel
