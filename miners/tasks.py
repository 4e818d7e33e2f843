"""The miner's task: run one generation job on this miner's engine."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore

from miners.resume import Superseded
from tasks.broker.messages import RESERVED_HEADER, holding
from tasks.jobs import GENERATE, LOAD_MODEL, UNLOAD_MODEL


# resultrepr_maxsize: Celery reprs every return value for its success log line, logged or
# not (about 90 us for a whole result here); the job id is preview enough.
@shared_task(name=GENERATE, bind=True, resultrepr_maxsize=48)
def generate(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the job; if it fails, retry it on another miner after a jittered backoff
    (Celery's retry, same job id) until MIA_MAX_ATTEMPTS, then fail naming it. A re-run
    (a retry, or a message redelivered after its miner died) continues the answer an
    earlier attempt began; one that a newer attempt took over ends storing nothing."""
    runtime = _runtime(self)
    delivery = self.request.delivery_info or {}
    reserved = getattr(self.request, RESERVED_HEADER, None)
    payload = holding(payload, reserved, delivery.get("routing_key"))
    rerun = bool(self.request.retries or delivery.get("redelivered"))
    try:
        result: dict[str, Any] = runtime.run(payload, rerun)
    except Superseded as exc:
        raise Ignore() from exc  # acknowledged: the attempt that took over answers
    except Exception as exc:
        plan = runtime.retry_elsewhere(payload, self.request.retries + 1, exc)
        raise self.retry(
            args=(plan.payload,),
            queue=plan.queue,
            countdown=plan.countdown_s,
            exc=exc,
            max_retries=None,
            throw=False,
        ) from exc
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
