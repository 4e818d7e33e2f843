"""Circuit breakers against real Redis: open after failures in a row, skipped by
dispatch, one trial after the cool-down, closed by a success, reopened for longer by
a failed trial; a caller's timeout counts as a failure."""

from __future__ import annotations

import json

import pytest

from scripts.processes import wait_for
from tasks.breaker import Breakers
from tasks.dispatch import Dispatched
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from web.fleet.client import JobClient
from web.fleet.registry import Heartbeat, Registry

PREFIX = "brk"  # not the live server's keys


@pytest.fixture
def parts(redis, settings):
    keys, scripts = Keys(PREFIX), Scripts(redis)
    registry = Registry(redis, keys, 30.0, scripts)
    for miner_id in ("x", "y"):
        registry.beat(Heartbeat(miner_id, "available", 100, 100, ["echo"], "echo"))
    tuned = settings.with_overrides(
        breaker_failures=3, breaker_cooldown_s=0.2, breaker_max_cooldown_s=0.8
    )
    return Breakers(redis, scripts, keys, tuned), RedisSelector(redis, scripts, keys, 60)


def picks(selector: RedisSelector, n: int = 6) -> set[str | None]:
    """Where ``n`` jobs in a row go, each finished before the next (slots given back)."""
    found = set()
    for _ in range(n):
        miner_id = selector.choose(Job([{"role": "user", "content": "hi"}]))
        if miner_id:
            selector.release(miner_id)
        found.add(miner_id)
    return found


def state(redis, miner_id: str) -> dict | None:
    raw = redis.hget(Keys(PREFIX).breakers, miner_id)
    return None if raw is None else json.loads(raw)


def test_failures_in_a_row_open_it_and_dispatch_skips_the_miner(parts, redis):
    breakers, selector = parts
    assert picks(selector) == {"x", "y"}
    assert [breakers.record("x", ok=False) for _ in range(3)] == ["", "", "opened"]
    assert picks(selector) == {"y"}
    assert breakers.record("x", ok=False) == ""  # late failures of earlier jobs: no change
    assert state(redis, "x")["cooldown"] == 200


def test_a_success_between_failures_resets_the_count(parts):
    breakers, _ = parts
    for ok in (False, False, True, False, False):
        assert breakers.record("x", ok=ok) == ""


def test_after_the_cool_down_one_trial_job_then_closed_or_reopened_for_longer(parts, redis):
    breakers, selector = parts
    for _ in range(3):
        breakers.record("x", ok=False)
    wait_for(lambda: "x" in picks(selector, 1) or None, 5, "the cool-down to end")
    assert state(redis, "x")["state"] == "trial"
    assert picks(selector) == {"y"}  # one trial at a time
    assert breakers.record("x", ok=False) == "opened"  # the trial failed
    assert state(redis, "x")["cooldown"] == 400
    wait_for(lambda: "x" in picks(selector, 1) or None, 5, "the second cool-down to end")
    assert breakers.record("x", ok=True) == "closed"
    assert state(redis, "x") is None and picks(selector) == {"x", "y"}


def test_a_callers_timeout_counts_against_the_miner(parts, redis):
    breakers, _ = parts
    client = JobClient(redis, Keys(PREFIX), None, None, breakers=breakers)  # type: ignore[arg-type]
    for _ in range(3):
        client.timed_out(Dispatched("job", "gpu-x", "x"))
    assert state(redis, "x")["state"] == "open"
    client.timed_out(Dispatched("job", "shared", None))  # no miner: nothing to blame
