"""Celery's formats as the service writes them by hand: the task message dispatch
publishes and the reaper rewrites, and the result meta (ours and Celery's own backend),
read back through Celery itself. (The private APIs are pinned in ``test_broker_pins``.)"""

from __future__ import annotations

import json

import pytest
from celery import states
from celery.result import AsyncResult
from celery.worker.request import Request

import miners.tasks  # noqa: F401 - registers mia.generate, which Celery's Request looks up
from tasks.broker.backend import ResultBackend, StoreCall, store_along
from tasks.broker.messages import (
    celery_meta,
    decode_message,
    failure_meta,
    priority,
    redeliver,
    rewritable,
    task_id,
)
from tasks.dispatch import MAX_PRIORITY, Dispatcher
from tasks.jobs import GENERATE
from tasks.keys import SHARED_QUEUE, Keys, text
from tasks.lua import source
from tests.celery_fixtures import NoMiner, a_job, changed, only

KEYS = Keys("mia")

# -- Celery's formats ----------------------------------------------------------------------


def test_a_job_celery_publishes_decodes_to_the_job_sent(celery_app, redis):
    job = a_job()
    Dispatcher(celery_app, NoMiner()).submit(job, shared_only=True)
    kombu_priority = MAX_PRIORITY - job.priority
    raw = only(redis.lrange(KEYS.queue_list(SHARED_QUEUE, kombu_priority), 0, -1))
    assert decode_message(raw) == job, changed("Celery's task message", f"it is {raw!r}")
    assert task_id(raw) == job.job_id
    assert priority(raw) == kombu_priority
    assert rewritable(raw)


def test_a_redelivered_message_is_what_celerys_worker_reads(celery_app, redis):
    """The reaper's rewrite, consumed through our transport and read by Celery's
    own worker ``Request``: the job, its new queue, marked redelivered, a new tag."""
    job = a_job()
    Dispatcher(celery_app, NoMiner()).submit(job, shared_only=True)
    raw = only(redis.lrange(KEYS.queue_list(SHARED_QUEUE, MAX_PRIORITY - job.priority), 0, -1))
    again = redeliver(raw, "gpu-pins", "pins")
    redis.rpush(KEYS.queue_list("gpu-pins", priority(again)), again)  # as recover.lua does
    with celery_app.connection_for_read() as conn:
        message = conn.default_channel.basic_get("gpu-pins", no_ack=True)
        request = Request(message, app=celery_app, task=celery_app.tasks[GENERATE])
    assert (request.id, request.name) == (job.job_id, GENERATE)
    assert request.args == [{**job.to_payload(), "reserved_on": "pins"}], changed(
        "Celery's task message", "a rewritten body is not what Celery's worker reads"
    )
    assert request.delivery_info["routing_key"] == "gpu-pins"
    assert request.delivery_info["redelivered"] is True
    assert message.delivery_tag != json.loads(raw)["properties"]["delivery_tag"]


def test_results_written_by_hand_read_back_through_celery(celery_app, redis):
    redis.set(KEYS.result("ok-1"), celery_meta("ok-1", states.SUCCESS, {"response": "hi"}))
    assert AsyncResult("ok-1", app=celery_app).get(timeout=5) == {"response": "hi"}
    redis.set(KEYS.result("bad-1"), failure_meta("bad-1", "it broke"))
    with pytest.raises(RuntimeError, match="it broke"):
        AsyncResult("bad-1", app=celery_app).get(timeout=5)


def test_a_failure_written_by_hand_is_in_the_form_celery_writes(celery_app, redis):
    celery_app.backend.mark_as_failure("bad-2", RuntimeError("it broke"))
    celerys = json.loads(redis.get(KEYS.result("bad-2")))
    ours = json.loads(failure_meta("bad-2", "it broke"))
    assert (set(ours), ours["result"]) == (set(celerys), celerys["result"]), changed(
        "Celery's result meta", f"Celery stores a failure as {celerys}"
    )


# -- our result backend ------------------------------------------------------------------


def test_our_backend_stores_what_celery_reads_and_keeps_the_first(celery_app, redis, settings):
    backend = celery_app.backend
    assert isinstance(backend, ResultBackend)
    assert text(backend.get_key_for_task("job-1")) == KEYS.result("job-1"), changed(
        "celery.backends.redis.RedisBackend.get_key_for_task", "results moved"
    )
    backend.store_result("job-1", {"n": 1}, states.SUCCESS)
    backend.store_result("job-1", {"n": 2}, states.SUCCESS)
    backend.mark_as_failure("job-1", RuntimeError("late"))
    assert AsyncResult("job-1", app=celery_app).get(timeout=5) == {"n": 1}
    assert backend.expires == backend.failure_expires == settings.result_ttl_s, changed(
        "celery.backends.redis.RedisBackend.expires", "the TTLs are not result_expires"
    )
    assert 0 < redis.ttl(KEYS.result("job-1")) <= settings.result_ttl_s


def test_a_store_along_goes_in_the_callers_round_trip(celery_app, redis):
    sent: list[str] = []

    def steps(store: StoreCall, state: str) -> None:
        pipe = redis.pipeline(transaction=False)
        store.queue(pipe)
        pipe.execute()
        sent.append(state)

    redis.script_load(source("store_result"))
    store_along(steps)
    celery_app.backend.store_result("job-2", {"n": 2}, states.SUCCESS)
    assert sent == [states.SUCCESS]
    assert AsyncResult("job-2", app=celery_app).get(timeout=5) == {"n": 2}
