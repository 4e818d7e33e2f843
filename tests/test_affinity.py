"""Session affinity (issue 24, point 3): a session's turns, and requests sharing a long
system prompt, go to the miner that ran them last while it has a free slot; otherwise
to the least loaded, as any job. Real Redis and the real Lua script; then real miners."""

from __future__ import annotations

import pytest

from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import Affinity, RedisSelector
from tests.conftest import expire_heartbeat
from web.fleet.registry import Heartbeat, Registry

KEYS = Keys("mia")
LONG = "You are the assistant of a very long system prompt. " * 4  # 208 characters


@pytest.fixture
def registry(redis):
    return Registry(redis, KEYS, ttl_s=3)


@pytest.fixture
def selector(redis):
    return RedisSelector(redis, Scripts(redis), KEYS, 60, Affinity(ttl_s=60, prompt_chars=200))


def beat(registry, miner_id: str, slots: int = 4, status: str = "available") -> None:
    registry.beat(Heartbeat(miner_id, status, slots, slots, ["echo"], "echo"))


def turn(session: str = "", system: str = "", model: str = "") -> Job:
    head = [{"role": "system", "content": system}] if system else []
    return Job([*head, {"role": "user", "content": "hi"}], model=model, affinity=session)


def test_a_sessions_turns_stay_on_its_miner_while_it_has_a_free_slot(registry, selector, redis):
    beat(registry, "a")
    beat(registry, "b")
    first = selector.choose(turn("s1"))
    other = "b" if first == "a" else "a"
    # the least loaded rule alone would send each of these to the idle miner
    assert [selector.choose(turn("s1")) for _ in range(3)] == [first] * 3
    assert selector.choose(turn("s1")) == other  # full: the least loaded, as any job
    assert redis.get(KEYS.affinity("s:s1")).decode() == other  # ... and it stays there
    selector.release(first)
    assert selector.choose(turn("s1")) == other
    assert 0 < redis.ttl(KEYS.affinity("s:s1")) <= 60
    assert selector.choose(turn("s2")) == other  # a new session: the least loaded (2 of 4)


def test_requests_sharing_a_long_system_prompt_share_a_miner(registry, selector):
    beat(registry, "a")
    beat(registry, "b")
    picks = [selector.choose(turn(system=LONG)) for _ in range(3)]
    assert len(set(picks)) == 1
    short = [selector.choose(turn(system="be brief")) for _ in range(2)]
    assert set(short) == {"a", "b"} - set(picks)  # short prompts: the least loaded
    assert selector.choose(turn(system=LONG, model="echo")) != picks[0]  # per model


def test_a_miner_that_may_not_take_the_turn_is_passed_over(registry, selector, redis):
    beat(registry, "a")
    beat(registry, "b")
    home = selector.choose(turn("s"))
    other = "b" if home == "a" else "a"
    registry.drain(home, "test")
    assert selector.choose(turn("s")) == other
    registry.undrain(home)
    assert selector.choose(turn("s"), exclude=other) == home  # a retry away from it
    expire_heartbeat(redis, KEYS, home)  # dead
    assert selector.choose(turn("s")) == other


def test_without_affinity_a_session_is_spread_as_any_job(registry, redis):
    plain = RedisSelector(redis, Scripts(redis), KEYS, 60)
    beat(registry, "a")
    beat(registry, "b")
    assert {plain.choose(turn("s1")) for _ in range(2)} == {"a", "b"}
    assert not redis.exists(KEYS.affinity("s:s1"))
    assert plain.choose(turn("s1"), shared_only=True) is None


def test_a_conversation_over_http_stays_on_one_miner(api, miner):
    for gpu in ("x", "y"):
        miner(gpu, slots=2)
    served = set()
    for i in range(6):
        body = {"message": f"turn {i}", "session_id": "aff-1"}
        answer = api.post(f"{api.base}/chat/direct", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        served.add(answer.json()["miner_id"])
    assert len(served) == 1  # without affinity the idle miners take turns: both
    plain = {
        api.post(f"{api.base}/chat/direct", json={"message": f"m {i}"}, timeout=30).json()[
            "miner_id"
        ]
        for i in range(4)
    }
    assert plain == {"x", "y"}


def test_a_sessions_turns_for_a_named_model_stay_on_its_miner(registry, selector):
    beat(registry, "a")
    beat(registry, "b")
    first = selector.choose(turn("s3", model="echo"))
    assert first in {"a", "b"}
    assert selector.choose(turn("s3", model="echo")) == first  # not '!drained'
