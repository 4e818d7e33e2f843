"""Celery's thread pool, which knows the jobs it was handed and has not started.

Celery hands a job to the pool when it is due; the pool's executor queues it until a
thread is free (a retry whose countdown ends while every slot is busy waits there for
a whole generation). Such a job is in neither of Celery's lists when the consumer loses
Redis (``Consumer.on_close`` keeps only the active ones), yet the pool still runs it:
``miners.worker.PutBack`` asks ``waiting`` so that it does not put it back on its queue
as well (a second run, and its slot given back twice).

Named as Celery's own (``celery.concurrency.thread``): the worker's banner shows the
pool's module, "concurrency: N (thread)", as before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from celery.concurrency import thread


class TaskPool(thread.TaskPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        correlation_id: str | None = None,
        **options: Any,
    ) -> Any:
        """Celery's; the job (``correlation_id``: its task id) counts as waiting until
        a thread starts it (and Celery's accept callback made it active)."""
        if correlation_id is None:
            return super().on_apply(target, args, kwargs, callback, accept_callback, **options)
        self._count(correlation_id, 1)

        def accepted(*started: Any) -> None:
            try:
                if accept_callback is not None:
                    accept_callback(*started)
            finally:
                self._count(correlation_id, -1)

        return super().on_apply(target, args, kwargs, callback, accepted, **options)

    def waiting(self) -> set[str]:
        """The ids of the jobs handed to the pool that no thread has started yet."""
        with self._lock:
            return set(self._waiting)

    def _count(self, job_id: str, change: int) -> None:
        with self._lock:
            self._waiting[job_id] += change
            if self._waiting[job_id] <= 0:
                del self._waiting[job_id]
