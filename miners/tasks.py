"""The miner's task: run one generation job on this miner's engine."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.jobs import GENERATE


@shared_task(name=GENERATE, bind=True)
def generate(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    runtime = self.app.runtime
    if runtime is None:
        raise RuntimeError("this worker is not a miner (start it with celery -A miners)")
    result: dict[str, Any] = runtime.run(payload)
    return result
