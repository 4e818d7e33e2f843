"""The reaper against real Redis and real Celery messages (no miner processes):
one death is handled at once, a mass expiry is waited out, then moved gradually."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from scripts.processes import wait_for
from tasks.broker.messages import task_id
from tasks.celery_app import create_celery
from tasks.dispatch import Dispatcher
from tasks.jobs import Job
from tasks.keys import Keys, queue_for
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from tasks.settings import Settings
from tests.conftest import expire_heartbeat
from tests.declared_keys import declared_only
from web.fleet.recovery import Reaper
from web.fleet.registry import Heartbeat, Registry

FLEET = [f"m{i}" for i in range(6)]
PREFIX = "rec"  # not the live server's: its own reaper must not take part
KEYS = Keys(PREFIX)


@dataclass
class Fleet:
    settings: Settings
    registry: Registry
    selector: RedisSelector
    scripts: Scripts
    keys: Keys

    def beat(self, miner_id: str, slots: int = 1) -> None:
        hb = Heartbeat(miner_id, "available", slots, slots, ["echo"], "echo", boot="boot-1")
        self.registry.beat(hb)

    def reaper(self, **overrides: object) -> Reaper:
        settings = self.settings.with_overrides(**overrides)
        return Reaper(self.selector._redis, self.scripts, self.keys, settings, self.selector)


def queued(redis, miner_id: str) -> int:
    return sum(redis.llen(name) for name in KEYS.queue_lists(queue_for(miner_id)))


@pytest.fixture
def celery(settings):
    """The web tier's Celery app under this test's prefix (its queues are kombu's lists
    under that prefix, which the reaper reads)."""
    app = create_celery("rec", settings.with_overrides(key_prefix=PREFIX))
    yield app
    app.close()


@pytest.fixture
def fleet(celery, redis, settings):
    """Six miners with two jobs each on their own queues, and one big live miner."""
    keys, scripts = KEYS, Scripts(redis)
    selector = RedisSelector(redis, scripts, keys, 600)
    found = Fleet(settings, Registry(redis, keys, 3.0, scripts), selector, scripts, keys)
    for miner_id in FLEET:
        found.beat(miner_id)
    dispatcher = Dispatcher(celery, selector)
    for i in range(2 * len(FLEET)):
        dispatcher.submit(Job([{"role": "user", "content": f"job {i}"}], model="echo"))
    found.beat("live", slots=100)
    return found


def test_a_finished_job_of_a_dead_miner_is_dropped_by_a_call_that_declares_its_keys(fleet, redis):
    """Its result is stored already: ``recover.lua`` drops it, with no destination,
    as a Redis ACL user allowed only the keys the call declares, all in one slot."""
    name = next(n for n in KEYS.queue_lists(queue_for("m0")) if redis.llen(n))
    done_id = task_id(redis.lindex(name, -1).decode())
    redis.set(KEYS.result(done_id), json.dumps({"status": "SUCCESS", "task_id": done_id}))
    expire_heartbeat(redis, KEYS, "m0")
    with declared_only(redis) as run:
        checked = lambda name, keys, args: run(name, keys, args)  # noqa: E731
        reaper = Reaper(redis, checked, KEYS, fleet.settings, fleet.selector)
        done = reaper()
    assert (done["finished"], done["moved"]) == (1, 1)
    assert queued(redis, "m0") == 0 and queued(redis, "live") == 1


def test_one_dead_miner_has_its_jobs_moved_at_once(fleet, redis):
    assert queued(redis, "m0") == 2
    expire_heartbeat(redis, KEYS, "m0")
    done = fleet.reaper()()
    assert done["moved"] == 2
    assert queued(redis, "m0") == 0 and queued(redis, "live") == 2
    assert not redis.sismember(KEYS.known, "m0")  # emptied: forgotten
    assert all(queued(redis, m) == 2 for m in FLEET[1:])


def test_a_mass_expiry_is_waited_out_then_moved_gradually(fleet, redis):
    for m in FLEET:  # Redis "restarted": 6 of 7 gone
        expire_heartbeat(redis, KEYS, m)
    patient = fleet.reaper(reaper_grace_s=60)
    assert sum(patient().values()) == 0  # suspect: nothing moves
    for miner_id in FLEET:  # ... and the miners come back
        fleet.beat(miner_id)
    assert sum(patient().values()) == 0
    assert all(queued(redis, m) == 2 for m in FLEET) and queued(redis, "live") == 0
    assert redis.zcard(KEYS.deaths) == 0

    for m in FLEET:  # this time they stay away
        expire_heartbeat(redis, KEYS, m)
    gradual = fleet.reaper(reaper_grace_s=0.3, reaper_mass_batch=5)
    passes: list[int] = []

    def all_moved() -> bool:
        passes.append(gradual()["moved"])
        return queued(redis, "live") == 2 * len(FLEET)

    wait_for(all_moved, 10, "the jobs to move after the grace period")
    assert passes[0] == 0 and max(passes) <= 5 and sum(passes) == 2 * len(FLEET)


def test_jobs_of_a_restarted_miners_old_process_are_moved(fleet, redis):
    """A supervisor restarts m0 within the TTL: its heartbeat never expires, but the
    job its old process was running (unacknowledged, held) is an orphan."""
    message = redis.rpop(next(n for n in KEYS.queue_lists("gpu-m0") if redis.llen(n)))
    envelope = json.loads(message)
    tag, job_id = envelope["properties"]["delivery_tag"], envelope["headers"]["id"]
    redis.hset(KEYS.unacked, tag, json.dumps([envelope, "", "gpu-m0"]))
    redis.zadd("unacked_index", {tag: 1.0})
    redis.hset(KEYS.held("m0"), job_id, f"{tag}|boot-1")

    hb = Heartbeat("m0", "available", 1, 1, ["echo"], "echo", boot="boot-2")
    fleet.registry.beat(hb)  # the new process
    done = fleet.reaper()()

    assert done["moved"] == 1
    assert not redis.hexists(KEYS.unacked, tag) and not redis.hexists(KEYS.held("m0"), job_id)
    assert queued(redis, "live") == 1 and queued(redis, "m0") == 1  # the queued one stays


def test_a_job_taken_but_not_yet_noted_as_held_is_found_in_kombus_unacked(fleet, redis):
    """m0 died between kombu's BRPOP (the message went to `unacked`) and noting it held."""
    message = redis.rpop(next(n for n in KEYS.queue_lists("gpu-m0") if redis.llen(n)))
    tag = json.loads(message)["properties"]["delivery_tag"]
    redis.hset(KEYS.unacked, tag, json.dumps([json.loads(message), "", "gpu-m0"]))
    redis.hset(KEYS.unacked, "other", json.dumps([json.loads(message), "", "gpu-m1"]))
    expire_heartbeat(redis, KEYS, "m0")
    done = fleet.reaper()()
    assert done["moved"] == 2  # the queued one and the unnoted one
    assert not redis.hexists(KEYS.unacked, tag) and redis.hexists(KEYS.unacked, "other")
    assert queued(redis, "live") == 2


def test_a_job_no_live_miner_can_take_waits_and_is_not_counted_as_dying_again(fleet, redis, celery):
    rare = Heartbeat("solo", "available", 1, 1, ["rare"], "echo", boot="b")
    fleet.registry.beat(rare)
    Dispatcher(celery, fleet.selector).submit(
        Job([{"role": "user", "content": "rare one"}], model="rare")
    )
    message = redis.rpop(next(n for n in KEYS.queue_lists("gpu-solo") if redis.llen(n)))
    envelope = json.loads(message)
    tag, job_id = envelope["properties"]["delivery_tag"], envelope["headers"]["id"]
    redis.hset(KEYS.unacked, tag, json.dumps([envelope, "", "gpu-solo"]))
    redis.hset(KEYS.held("solo"), job_id, f"{tag}|b")
    expire_heartbeat(redis, KEYS, "solo")
    reaper = fleet.reaper()
    for _ in range(fleet.settings.max_attempts + 1):
        assert reaper()["parked"] == 1
    assert not redis.exists(KEYS.result(job_id))

    fleet.registry.beat(Heartbeat("spare", "available", 1, 1, ["rare"], "echo"))
    assert reaper()["moved"] == 1
    assert queued(redis, "spare") == 1 and not redis.hexists(KEYS.unacked, tag)
