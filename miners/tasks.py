"""The miner's task: run one generation job on this miner's engine."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.jobs import GENERATE, LOAD_MODEL, UNLOAD_MODEL


@shared_task(name=GENERATE, bind=True, resultrepr_maxsize=240)  # logs: a preview only
def generate(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    runtime = self.app.runtime
    if runtime is None:
        raise RuntimeError("this worker is not a miner (start it with celery -A miners)")
    result: dict[str, Any] = runtime.run(payload)
    return result


@shared_task(name=LOAD_MODEL, bind=True)
def load_model(self: Task, model_id: str) -> dict[str, Any]:
    """Load a model (its whole group) on this miner: ``POST /api/v2/models/load``."""
    state: dict[str, Any] = _runtime(self).load(model_id)
    return state


@shared_task(name=UNLOAD_MODEL, bind=True)
def unload_model(self: Task, model_id: str) -> dict[str, Any]:
    state: dict[str, Any] = _runtime(self).unload(model_id)
    return state


def _runtime(task: Task) -> Any:
    runtime = task.app.runtime
    if runtime is None:
        raise RuntimeError("this worker is not a miner (start it with celery -A miners)")
    return runtime
