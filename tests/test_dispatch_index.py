"""The dispatch index (``lua/index.lua``): a choice among hundreds of miners reads only
the front of a sorted set, and picks what reading every miner would have picked."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import DRAINED, UNSERVED, RedisSelector
from tests.conftest import expire_heartbeat
from web.fleet.registry import Heartbeat, Registry

KEYS = Keys("mia")
PICK = 2**39  # index.lua's IDX_PICK
OPEN = json.dumps({"state": "open", "until": 2**50, "cooldown": 5000})


@pytest.fixture
def registry(redis):
    return Registry(redis, KEYS, ttl_s=30)


@pytest.fixture
def selector(redis):
    return RedisSelector(redis, Scripts(redis), KEYS, job_ttl_s=60)


def beat(registry, miner_id, slots=1, models=("echo",), status="available"):
    registry.beat(Heartbeat(miner_id, status, slots, slots, list(models), "echo"))


def job(model="", device=""):
    return Job(messages=[{"role": "user", "content": "hi"}], model=model, device=device)


def fleet(redis, registry, n, slots=4, busy=True, models=("echo",)):
    """``n`` live miners, each with every slot taken when ``busy``."""
    if busy:
        redis.hset(KEYS.inflight, mapping={f"m{i:03d}": slots for i in range(n)})
    for i in range(n):
        beat(registry, f"m{i:03d}", slots=slots, models=models)


def index(redis, model=""):
    return [m.decode() for m in redis.zrange(KEYS.index_for(model), 0, -1)]


def lookups(redis):
    stats = redis.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("get", "exists"))


def test_the_free_miner_among_hundreds_of_busy_ones_is_found_by_reading_a_few(
    registry, selector, redis
):
    fleet(redis, registry, 300)
    beat(registry, "free", slots=2)
    before = lookups(redis)
    assert selector.choose(job()) == "free"
    # reading every miner costs two lookups each (600); the index reads a page
    assert lookups(redis) - before < 40
    assert selector.choose(job("echo")) == "free"
    # now every miner is full: a job for a named model waits on the least loaded one
    # (a tie: the one picked longest ago)
    assert selector.choose(job()) is None
    assert selector.choose(job("echo")) == "m000"


def test_idle_miners_take_turns_across_hundreds(registry, selector, redis):
    fleet(redis, registry, 200, slots=1, busy=False)
    picks = []
    for _ in range(400):
        picked = selector.choose(job())
        picks.append(picked)
        selector.release(picked)
    assert set(Counter(picks).values()) == {2}
    # each turn went to the one picked longest ago: the second round repeats the first
    assert picks[:200] == picks[200:]


def test_least_loaded_first_and_the_index_follows_reservations_and_releases(
    registry, selector, redis
):
    fleet(redis, registry, 50, slots=4, busy=False)
    for i in range(50):  # m000 has 3 of 4 taken ... m049 has 0
        redis.hset(KEYS.inflight, f"m{i:03d}", max(3 - i, 0))
    for i in range(50):  # the heartbeat after a reset indexes the new load
        redis.hdel(KEYS.indexed, f"m{i:03d}")
        beat(registry, f"m{i:03d}", slots=4)
    assert index(redis)[-3:] == ["m002", "m001", "m000"]
    chosen = [selector.choose(job()) for _ in range(50 * 4 - 6)]
    # the 47 idle ones fill up evenly, one slot each in turn, before any with a load
    assert Counter(chosen[:47]) == Counter(f"m{i:03d}" for i in range(3, 50))
    assert selector.choose(job()) is None  # every slot is taken
    selector.release("m010")
    assert index(redis)[0] == "m010"
    assert selector.choose(job()) == "m010"


def test_dead_draining_open_excluded_and_drained_miners_are_passed_over(registry, selector, redis):
    for name in ("dead", "draining", "open", "drained", "excluded", "good"):
        beat(registry, name, slots=1, status="draining" if name == "draining" else "available")
    expire_heartbeat(redis, KEYS, "dead")
    redis.hset(KEYS.breakers, "open", OPEN)
    registry.drain("drained", "anomaly")
    assert selector.choose(job(), exclude="excluded") == "good"
    assert registry.reap() == 1  # the dead one leaves the index with the reap
    assert "dead" not in index(redis) and not redis.sismember(KEYS.miners, "dead")
    # the draining one sorts behind every other, but still counts as serving its model
    assert index(redis)[-1] == "draining"
    assert selector.choose(job("echo"), shared_only=True) is None
    # "good" is full: a job for its model waits on its queue, any other job on shared
    assert selector.choose(job("echo"), exclude="excluded") == "good"
    assert selector.choose(job(), exclude="excluded") is None


def test_model_change_moves_the_miner_between_model_indexes(registry, selector, redis):
    beat(registry, "a", models=("echo",))
    beat(registry, "b", models=("echo",))
    beat(registry, "a", models=("smollm2",))
    assert index(redis, "echo") == ["b"]
    assert index(redis, "smollm2") == ["a"]
    assert selector.choose(job("smollm2")) == "a"
    beat(registry, "a", models=())
    assert selector.choose(job("smollm2")) == UNSERVED
    assert redis.zcard(KEYS.index_for("smollm2")) == 0


def test_a_stale_model_member_is_dropped_when_met(registry, selector, redis):
    beat(registry, "a", models=("echo",))
    redis.zadd(KEYS.index_for("llama"), {"a": 0})  # as if a model change was lost
    assert selector.choose(job("llama")) == UNSERVED
    assert index(redis, "llama") == []


def test_offline_expiry_and_reap_leave_no_index_entry(registry, selector, redis):
    for name in ("a", "b", "c"):
        beat(registry, name, models=("echo", "x"))
    beat(registry, "a", status="offline")
    expire_heartbeat(redis, KEYS, "b")
    redis.zadd(KEYS.last_seen, {"b": time.time() - 60})  # its TTL ran out: silent since
    assert registry.reap() == 1
    assert index(redis) == index(redis, "echo") == index(redis, "x") == ["c"]
    assert redis.hkeys(KEYS.indexed) == redis.hkeys(KEYS.beats) == [b"c"]


def test_register_resets_slots_and_the_next_beat_indexes_the_new_load(registry, selector, redis):
    beat(registry, "a", slots=1)
    beat(registry, "b", slots=1)
    assert selector.choose(job()) == "a"
    registry.reset_slots("a")  # the miner registered again: its old jobs are gone
    beat(registry, "a", slots=1)
    score = redis.zscore(KEYS.index, "a")
    assert score is not None and score < PICK  # load 0 again
    assert selector.choose(job()) == "b"
    assert selector.choose(job()) == "a"


def test_a_target_device_is_read_directly(registry, selector, redis):
    fleet(redis, registry, 100)
    assert selector.choose(job("echo", device="m050")) == "m050"
    assert int(redis.hget(KEYS.inflight, "m050")) == 5
    assert selector.choose(job("echo", device="nobody")) == UNSERVED


# -- the index against a plain model of the rule it replaces --------------------------

IDS = ("a", "b", "c", "d", "e", "f")
MODELS = ("x", "y")


class OldRule:
    """The choice as reading every miner made it, in plain Python."""

    def __init__(self) -> None:
        self.miners: dict[str, dict] = {}
        self.used: Counter[str] = Counter()
        self.picks: Counter[str] = Counter()
        self.drained: set[str] = set()
        self.breakers: dict[str, str] = {}
        self.seq = 0

    def answers(self, model: str, exclude: str, shared_only: bool) -> set[str | None]:
        """Every answer the old script could give (ties it broke by set order)."""

        def serves(hb: dict) -> bool:
            return not model or model in hb["models"]

        def drained(miner_id: str) -> bool:
            return self.miners[miner_id]["status"] == "draining" or miner_id in self.drained

        serving = [m for m, hb in self.miners.items() if serves(hb)]
        if model and not serving:
            return {UNSERVED}
        if shared_only:
            return {None}
        if model and all(drained(m) for m in serving):
            return {DRAINED}
        candidates = {
            miner_id: self.used[miner_id] / hb["slots"]
            for miner_id, hb in self.miners.items()
            if not drained(miner_id)
            and hb["slots"] > 0
            and hb["models"]  # a miner without a model takes no job
            and serves(hb)
            and miner_id != exclude
            and miner_id not in self.drained
            and self.breakers.get(miner_id) != "open"
        }
        free = {m: (load, self.picks[m]) for m, load in candidates.items() if load < 1}
        if free:
            least = min(free.values())
            return {m for m, key in free.items() if key == least}
        if model and candidates:
            least_load = min(candidates.values())
            return {m for m, load in candidates.items() if load == least_load}
        return {None}

    def reserved(self, miner_id: str) -> None:
        self.used[miner_id] += 1
        self.seq += 1
        self.picks[miner_id] = self.seq
        if self.breakers.get(miner_id) == "trial":
            self.breakers[miner_id] = "open"


def test_the_index_chooses_as_reading_every_miner_did(redis):
    ids, models = st.sampled_from(IDS), st.sampled_from(("", *MODELS, "z"))

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            redis.flushdb()
            self.registry = Registry(redis, KEYS, ttl_s=30)
            self.selector = RedisSelector(redis, Scripts(redis), KEYS, job_ttl_s=60)
            self.old = OldRule()

        @rule(
            miner_id=ids,
            slots=st.integers(0, 3),
            serves=st.sets(st.sampled_from(MODELS)),
            status=st.sampled_from(("available", "busy", "draining")),
        )
        def heartbeat(self, miner_id, slots, serves, status):
            served = sorted(serves)
            beat(self.registry, miner_id, slots=slots, models=served, status=status)
            self.old.miners[miner_id] = {"slots": slots, "models": served, "status": status}

        @rule(miner_id=ids, offline=st.booleans())
        def leave(self, miner_id, offline):
            if offline:
                beat(self.registry, miner_id, status="offline")
            else:
                expire_heartbeat(redis, KEYS, miner_id)
            self.old.miners.pop(miner_id, None)

        @rule(miner_id=ids)
        def release(self, miner_id):
            self.selector.release(miner_id)
            self.old.used[miner_id] = max(self.old.used[miner_id] - 1, 0)

        @rule(miner_id=ids, drained=st.booleans())
        def drain(self, miner_id, drained):
            if drained:
                self.registry.drain(miner_id, "test")
                self.old.drained.add(miner_id)
            else:
                self.registry.undrain(miner_id)
                self.old.drained.discard(miner_id)

        @rule(miner_id=ids, state=st.sampled_from(("open", "trial", "")))
        def breaker(self, miner_id, state):
            if state:
                until = 2**50 if state == "open" else 0
                redis.hset(KEYS.breakers, miner_id, json.dumps({"state": state, "until": until}))
                self.old.breakers[miner_id] = state
            else:
                redis.hdel(KEYS.breakers, miner_id)
                self.old.breakers.pop(miner_id, None)

        @rule(model=models, exclude=st.sampled_from(("", *IDS)), shared_only=st.booleans())
        def reserve(self, model, exclude, shared_only):
            expected = self.old.answers(model, exclude, shared_only)
            picked = self.selector.choose(job(model), shared_only=shared_only, exclude=exclude)
            assert picked in expected
            if picked and picked not in (UNSERVED, DRAINED):
                self.old.reserved(picked)

    run_state_machine_as_test(
        Machine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None)
    )
