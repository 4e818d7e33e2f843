"""A miner's after-job bookkeeping (miners.bookkeeping) against real Redis.

On success the slot, the result, the held note and the breaker outcome go in one
round trip, the slot before the result; Redis losing its scripts changes nothing of
that; and when no store took the steps, task_postrun (``finished``) does their work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import pytest
import redis as redis_lib

from miners.bookkeeping import Bookkeeping
from miners.engines.echo import EchoEngine
from miners.runtime import MinerRuntime
from tasks.breaker import Breakers
from tasks.broker import qos, transport
from tasks.broker.backend import StoreCall, take_along
from tasks.jobs import GENERATE, Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.replication import Replicas
from tasks.selector import RedisSelector
from web.fleet.registry import Heartbeat, Registry

PREFIX = "bk"  # not the live server's keys
KEYS = Keys(PREFIX)
# A stand-in for store_result.lua: notes the miner's in-flight count the moment the
# result is stored, so a test sees whether the slot was back by then.
STORE = (
    "redis.call('SET', KEYS[2], redis.call('HGET', KEYS[1], 'm') or 'none');"
    "redis.call('SET', KEYS[3], 'result'); return 1"
)


@pytest.fixture
def parts(redis, settings) -> tuple[Bookkeeping, RedisSelector, Keys]:
    keys, scripts = Keys(PREFIX), Scripts(redis)
    Registry(redis, keys, 30.0, scripts).beat(Heartbeat("m", "available", 1, 1, ["echo"], "echo"))
    selector = RedisSelector(redis, scripts, keys, 60)
    breakers = Breakers(redis, scripts, keys, settings)
    books = Bookkeeping(settings, "m", "boot-1", redis, keys, scripts, selector, breakers)
    return books, selector, keys


def reserved(selector: RedisSelector, redis, keys: Keys) -> None:
    assert selector.choose(Job([{"role": "user", "content": "hi"}])) == "m"
    assert int(redis.hget(keys.inflight, "m")) == 1


def a_store(redis, keys: Keys, calls: list[str]) -> StoreCall:
    args = [keys.inflight, f"{PREFIX}:seen", KEYS.result("job-1")]

    def queue(pipe: redis_lib.client.Pipeline) -> None:
        calls.append("queued")
        pipe.eval(STORE, 3, *args)

    def alone() -> int:
        calls.append("alone")
        return int(redis.eval(STORE, 3, *args))

    return StoreCall(queue=queue, alone=alone, replicas=Replicas(redis, 0, 500))


def store_now(state: str, store: StoreCall) -> None:
    steps: Callable[[StoreCall, str], None] | None = take_along()
    assert steps is not None, "release_with_result left no steps for the result's store"
    steps(store, state)


def delivered(books: Bookkeeping, redis, job_id: str, tag: str) -> None:
    """kombu delivers the job: its unacked entry and the miner's held note, one MULTI."""
    pipe = redis.pipeline()
    pipe.zadd(KEYS.unacked_index, {tag: 1.0})
    pipe.hset(KEYS.unacked, tag, "the message")
    books.note_held(pipe, SimpleNamespace(headers={"task": GENERATE, "id": job_id}), tag)
    pipe.execute()


def test_a_success_settles_slot_result_note_ack_and_outcome_in_the_results_round_trip(redis, parts):
    books, selector, keys = parts
    reserved(selector, redis, keys)
    delivered(books, redis, "job-1", "tag-1")
    assert redis.hget(keys.held("m"), "job-1") == b"tag-1|boot-1"
    redis.hset(keys.failstreak, "m", 2)
    books.release_with_result("job-1", "m")
    calls: list[str] = []
    store_now("SUCCESS", a_store(redis, keys, calls))
    assert calls == ["queued"]
    assert redis.get(f"{PREFIX}:seen") == b"0"  # the slot was back before the result
    assert not redis.hexists(keys.held("m"), "job-1")
    assert not redis.zscore(KEYS.unacked_index, "tag-1")
    assert not redis.hexists(KEYS.unacked, "tag-1")
    assert "tag-1" in qos._settled  # kombu's ack of it skips Redis
    assert not redis.hget(keys.failstreak, "m")  # a success ends the streak
    redis.hset(keys.held("m"), "job-2", "2|boot-1")
    books.finished("job-1", ok=True)  # task_postrun: nothing left to do for job-1
    assert redis.hexists(keys.held("m"), "job-2")
    assert int(redis.hget(keys.inflight, "m")) == 0  # released once, not twice


def test_a_job_off_shared_without_a_slot_settles_in_the_results_round_trip_too(
    redis, parts, monkeypatch
):
    """Under overload most jobs wait on ``shared`` and reserve no slot: their result,
    held note, ack and outcome still go in one round trip, and no slot is touched."""
    books, _, keys = parts
    delivered(books, redis, "job-1", "tag-3")
    redis.hset(keys.inflight, "m", 1)  # another job's slot: not this one's to give back
    books.release_with_result("job-1", None)
    calls: list[str] = []
    rounds: list[int] = []
    execute = redis_lib.client.Pipeline.execute

    def counted(pipe: redis_lib.client.Pipeline, *args: object, **kwargs: object) -> object:
        rounds.append(len(pipe.command_stack))
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(redis_lib.client.Pipeline, "execute", counted)
    store_now("SUCCESS", a_store(redis, keys, calls))
    books.finished("job-1", ok=True)  # task_postrun: nothing left to do
    assert calls == ["queued"] and rounds == [3]  # store, settle, outcome: one round trip
    assert redis.exists(KEYS.result("job-1"))
    assert not redis.hexists(keys.held("m"), "job-1") and not redis.hexists(KEYS.unacked, "tag-3")
    assert "tag-3" in qos._settled
    assert int(redis.hget(keys.inflight, "m")) == 1


def test_every_job_that_succeeds_leaves_its_bookkeeping_to_its_results_store(redis, settings):
    """The miner's runtime hands the steps to the result's store for a job with a
    reserved slot and for one off ``shared`` alike."""
    runtime = MinerRuntime(settings, "bk-m", EchoEngine())
    try:
        for reserved_on in ("bk-m", None):
            job = Job([{"role": "user", "content": "hi"}], reserved_on=reserved_on)
            runtime.run(job.to_payload())
            assert take_along() is not None, reserved_on
            runtime.books.finished(job.job_id, ok=True)
    finally:
        runtime.close()


def test_redis_losing_its_scripts_changes_nothing(redis, parts):
    books, selector, keys = parts
    reserved(selector, redis, keys)
    redis.hset(keys.held("m"), "job-1", "1|boot-1")
    books.release_with_result("job-1", "m")
    redis.script_flush()  # a restart, as the next pipeline finds it
    calls: list[str] = []

    def store_by_hash(pipe: redis_lib.client.Pipeline) -> None:  # as the backend queues it
        calls.append("queued")
        pipe.evalsha("0" * 40, 0)

    fallback = a_store(redis, keys, calls)
    store_now("SUCCESS", replace(fallback, queue=store_by_hash))
    assert calls == ["queued", "alone"]
    assert redis.get(f"{PREFIX}:seen") == b"0"  # still the slot first
    assert not redis.hexists(keys.held("m"), "job-1")


def test_steps_no_store_took_are_done_at_task_postrun_and_dropped(redis, parts):
    books, selector, keys = parts
    reserved(selector, redis, keys)
    redis.hset(keys.held("m"), "job-1", "1|boot-1")
    books.release_with_result("job-1", "m")
    books.finished("job-1", ok=True)  # no result was stored with the steps
    assert int(redis.hget(keys.inflight, "m")) == 0
    assert not redis.hexists(keys.held("m"), "job-1")
    assert take_along() is None  # the next job's store goes alone


class LosesOnePipeline(redis_lib.Redis):
    """Real Redis, except that the first pipeline's round trip is lost."""

    lost = False

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None):  # type: ignore[no-untyped-def]
        pipe = super().pipeline(transaction, shard_hint)
        if not self.lost:
            self.lost = True

            def execute(*_args: object, **_kwargs: object) -> list[object]:
                raise redis_lib.ConnectionError("the round trip was lost")

            pipe.execute = execute  # type: ignore[method-assign]
        return pipe


def test_a_store_whose_round_trip_is_lost_leaves_the_slot_to_task_postrun(
    redis, redis_url, settings, parts
):
    _, selector, keys = parts
    scripts = Scripts(redis)
    books = Bookkeeping(
        settings,
        "m",
        "boot-1",
        LosesOnePipeline.from_url(redis_url),
        keys,
        scripts,
        selector,
        Breakers(redis, scripts, keys, settings),
    )
    reserved(selector, redis, keys)
    redis.hset(keys.held("m"), "job-1", "1|boot-1")
    books.release_with_result("job-1", "m")
    with pytest.raises(redis_lib.ConnectionError):  # Celery's to handle, as any store error
        store_now("SUCCESS", a_store(redis, keys, []))
    assert int(redis.hget(keys.inflight, "m")) == 1
    books.finished("job-1", ok=True)
    assert int(redis.hget(keys.inflight, "m")) == 0
    assert not redis.hexists(keys.held("m"), "job-1")


def test_without_a_stored_result_the_job_stays_recoverable(redis, parts):
    books, selector, keys = parts
    reserved(selector, redis, keys)
    delivered(books, redis, "job-1", "tag-2")
    books.release_with_result("job-1", "m")

    def stores_nothing(pipe: redis_lib.client.Pipeline) -> None:
        pipe.ping()

    store_now(
        "SUCCESS",
        StoreCall(queue=stores_nothing, alone=lambda: None, replicas=Replicas(redis, 0, 500)),
    )
    assert redis.hexists(KEYS.unacked, "tag-2")  # kombu acknowledges it itself, as usual
    assert "tag-2" not in qos._settled


def test_kombus_ack_of_a_settled_delivery_skips_redis(redis_url, redis):
    from kombu import Connection

    options = {"global_keyprefix": KEYS.broker_prefix}
    with Connection(redis_url, transport=transport.Transport, transport_options=options) as conn:
        channel = conn.default_channel
        channel.queue_declare("bk-q")
        channel.basic_publish(channel.prepare_message("hi"), "", "bk-q")
        message = channel.basic_get("bk-q", no_ack=False)
        tag = message.delivery_tag
        assert redis.hexists(KEYS.unacked, tag)
        redis.zrem(KEYS.unacked_index, tag)
        redis.hdel(KEYS.unacked, tag)  # as settle.lua does
        qos.acked(tag)

        def no_round_trip(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("acknowledged in Redis again")

        channel.qos._remove_from_indices = no_round_trip
        message.ack()
        assert tag not in qos._settled
        assert tag in channel.qos._dirty  # kombu's own bookkeeping of the ack is done
