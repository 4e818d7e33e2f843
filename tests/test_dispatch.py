"""Miner choice and slot reservation (the Lua script) against a real Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import DRAINED, UNSERVED, RedisSelector
from tests.conftest import expire_heartbeat
from web.fleet.registry import Heartbeat, Registry, redis_now_ms

KEYS = Keys("mia")


@pytest.fixture
def registry(redis):
    return Registry(redis, KEYS, ttl_s=3)


@pytest.fixture
def selector(redis):
    return RedisSelector(redis, Scripts(redis), KEYS, job_ttl_s=60)


def beat(registry, miner_id, slots=1, models=("echo",), status="available"):
    registry.beat(Heartbeat(miner_id, status, slots, slots, list(models), "echo"))


def job(model="", device=""):
    return Job(messages=[{"role": "user", "content": "hi"}], model=model, device=device)


def test_no_live_miner_means_shared(selector):
    assert selector.choose(job()) is None


def test_least_loaded_miner_is_chosen(registry, selector, redis):
    beat(registry, "a", slots=4)
    beat(registry, "b", slots=4)
    redis.hset(KEYS.inflight, "a", 3)
    redis.hset(KEYS.inflight, "b", 1)
    assert selector.choose(job()) == "b"
    assert int(redis.hget(KEYS.inflight, "b")) == 2


def test_idle_miners_take_turns(registry, selector):
    for name in ("a", "b", "c"):
        beat(registry, name, slots=1)
    picks = []
    for _ in range(6):
        picked = selector.choose(job())
        picks.append(picked)
        selector.release(picked)
    assert Counter(picks) == {"a": 2, "b": 2, "c": 2}


def test_full_miners_overflow_to_shared_and_release_frees_a_slot(registry, selector):
    beat(registry, "a", slots=2)
    assert [selector.choose(job()) for _ in range(3)] == ["a", "a", None]
    selector.release("a")
    assert selector.choose(job()) == "a"


@pytest.mark.parametrize("waiting_on", ["shared", "shared\x06\x169"])  # any priority step
def test_jobs_waiting_on_shared_are_served_first(registry, selector, redis, waiting_on):
    """Under overload a freed slot goes to the job that waited, not to a newer one."""
    beat(registry, "a", slots=1)
    assert selector.choose(job()) == "a"
    assert selector.choose(job()) is None  # full: this one waits on shared
    waiting_on = KEYS.broker_prefix + waiting_on
    redis.lpush(waiting_on, "the waiting job's message")
    selector.release("a")
    assert selector.choose(job()) is None  # behind it, though a slot is free
    assert selector.choose(job("echo")) == "a"  # a named model never waits on shared
    redis.delete(waiting_on)
    selector.release("a")
    assert selector.choose(job()) == "a"  # nothing waits: straight to the miner


def test_release_never_goes_below_zero(registry, selector, redis):
    beat(registry, "a", slots=1)
    selector.release("a")
    selector.release("a")
    assert int(redis.hget(KEYS.inflight, "a")) == 0
    assert selector.choose(job()) == "a"


def test_model_routing_and_status(registry, selector):
    beat(registry, "llama", models=("smollm2",))
    beat(registry, "drain", models=("echo",), status="draining")
    beat(registry, "echo", models=("echo",))
    assert selector.choose(job("smollm2")) == "llama"
    assert selector.choose(job("missing")) == UNSERVED
    assert selector.choose(job("echo")) == "echo"
    # full: a job for a named model waits on a miner serving it (never the draining
    # one), not on shared where a miner without the model could take it
    assert selector.choose(job("echo")) == "echo"
    assert selector.choose(job()) is None  # no model named: shared


def test_a_miner_without_a_model_takes_no_job(registry, selector, redis):
    beat(registry, "empty", slots=4, models=())
    assert selector.choose(job()) is None  # to shared: it waits for a miner with a model
    beat(registry, "full", slots=1)
    assert selector.choose(job()) == "full"
    assert selector.choose(job()) is None  # "full" is full; "empty" still takes nothing
    assert [m.decode() for m in redis.zrange(KEYS.index, 0, -1)] == ["full", "empty"]
    beat(registry, "empty", slots=4, models=("echo",))  # a model loaded again
    assert selector.choose(job()) == "empty"


def test_drained_miners_take_no_new_job(registry, selector, redis):
    beat(registry, "a", models=("echo",))
    beat(registry, "b", models=("echo",), status="draining")  # as its heartbeat says
    registry.drain("a", "maintenance")
    assert selector.choose(job("echo")) == DRAINED  # refused, not left on shared
    assert selector.choose(job("echo", device="a")) == DRAINED
    assert selector.choose(job("echo", device="b")) == DRAINED
    assert selector.choose(job()) is None  # any model: waits on shared
    assert redis.hget(KEYS.inflight, "a") is None  # nothing reserved
    assert registry.undrain("a") and not registry.undrain("a")
    assert selector.choose(job("echo")) == "a"


def test_a_drain_is_announced_to_its_miner(registry, redis):
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.drains)
    registry.drain("a", "test", ttl_s=5)
    assert 4000 < redis.pttl(KEYS.drain("a")) <= 5000
    # dispatch's copy ends with it, by Redis's clock (the one reserve.lua reads)
    assert 4000 < int(redis.hget(KEYS.drained, "a")) - redis_now_ms(redis) <= 5000
    registry.undrain("a")
    assert redis.hget(KEYS.drained, "a") is None
    heard, deadline = [], time.monotonic() + 5
    while len(heard) < 2 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)  # None: the subscription's confirmation
        if message:
            heard.append(message["data"])
    assert heard == [b"a", b"a"]  # drained, then undrained: it reads which from the key
    pubsub.close()


def test_expired_heartbeat_is_dropped_from_the_index(registry, selector, redis):
    beat(registry, "gone")
    expire_heartbeat(redis, KEYS, "gone")
    assert selector.choose(job()) is None  # passed over at once
    assert registry.reap() == 1  # and forgotten by the reap
    assert not redis.sismember(KEYS.miners, "gone")
    assert redis.zrange(KEYS.index, 0, -1) == [] and redis.hkeys(KEYS.beats) == []


def test_job_record_says_where_the_job_went(registry, selector, redis):
    beat(registry, "a")
    first, second = job(), job()
    selector.choose(first)
    selector.choose(second)
    assert b'"queue":"gpu-a"' in redis.get(KEYS.job(first.job_id))
    assert b'"queue":"shared"' in redis.get(KEYS.job(second.job_id))


def test_concurrent_reservations_never_exceed_slots(registry, selector, redis_url):
    # 3 miners with 2 slots each, 24 threads asking at once: exactly 6 reservations,
    # never 3 on one miner, the rest to shared.
    for name in ("a", "b", "c"):
        beat(registry, name, slots=2)
    start = threading.Barrier(24)
    picks: list[str | None] = []
    lock = threading.Lock()

    def ask() -> None:
        import redis as redis_lib

        own_client = redis_lib.Redis.from_url(redis_url)
        own = RedisSelector(own_client, Scripts(own_client), KEYS, 60)
        start.wait()
        picked = own.choose(job())
        with lock:
            picks.append(picked)

    threads = [threading.Thread(target=ask) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(picks)
    assert counts == {"a": 2, "b": 2, "c": 2, None: 18}


def members(redis, model=""):
    return redis.zrange(KEYS.index_for(model), 0, -1)


def test_an_evicted_miner_leaves_the_index_at_once(registry, selector, redis):
    """A revoked miner is out of dispatch at once (``Registry.evict``): the reap, which
    reads only the miner set, would never see it again."""
    beat(registry, "a", models=("echo", "x"))
    beat(registry, "b", models=("echo",))
    registry.evict("a", "revoked")
    assert members(redis) == members(redis, "echo") == [b"b"] and members(redis, "x") == []
    assert redis.hget(KEYS.indexed, "a") is None and redis.hget(KEYS.beats, "a") is None
    assert registry.reap(full=True) == 0
    assert selector.choose(job("echo")) == "b"
