"""Assistant sessions in real Redis: trimmed by the model's tokenizer, expiring,
the least recently used evicted beyond the bound."""

from __future__ import annotations

import pytest

from chat_service.sessions import SessionStore, Turn, trim
from chat_service.tokens import counter
from tasks.errors import Conflict
from tasks.keys import Keys
from tasks.lua import Scripts


def sessions(redis, **kwargs) -> SessionStore:
    return SessionStore(redis, Scripts(redis), Keys("mia"), counter(), **kwargs)


def test_trimming_keeps_the_newest_turns_within_the_token_budget(redis):
    store = sessions(redis)
    session = store.load("restaurant", None)
    for i in range(20):
        session.history += [
            store.turn("user", f"question number {i} about the menu and the wine list"),
            store.turn("assistant", f"answer number {i}: we have three red wines and a rose"),
        ]
    store.save(session, max_history_tokens=120)
    again = store.load("restaurant", session.session_id)
    used = sum(counter().message(t.role, t.content) for t in again.history)
    assert used <= 120
    assert again.history[-1].content.startswith("answer number 19")
    assert again.history[0].role == "user"
    assert len(again.history) < 40


def test_trim_drops_whole_turns_and_never_starts_with_the_assistant():
    turns = [Turn("user", "a", 10), Turn("assistant", "b", 10), Turn("user", "c", 10)]
    assert [t.content for t in trim(turns, 25)] == ["c"]
    assert [t.content for t in trim(turns, 30)] == ["a", "b", "c"]
    assert trim(turns, 5) == []


def test_sessions_expire_and_the_least_recently_used_are_evicted(redis):
    store = sessions(redis, ttl_s=60, max_sessions=3)
    ids = []
    for _ in range(5):
        session = store.load("restaurant", None)
        store.save(session, 100)
        ids.append(session.session_id)
    alive = [sid for sid in ids if not store.load("restaurant", sid).new]
    assert alive == ids[-3:]
    ttl = redis.ttl(Keys("mia").session("restaurant", ids[-1]))
    assert 0 < ttl <= 60


def test_a_turn_keeps_its_session_lock_alive_and_releases_it(redis):
    store = sessions(redis)
    key = Keys("mia").session_lock("maze", "s-1")
    with store.locked("maze", "s-1", wait_s=1.0) as lock:
        assert 0 < redis.pttl(key) <= 7000  # twice the wait, plus slack
        redis.pexpire(key, 300)  # as if the turn had run for most of the lock's life
        lock._kept -= 5  # and last kept it long ago
        lock.keep()
        assert redis.pttl(key) > 5000
    assert redis.exists(key) == 0


def test_a_second_turn_waits_then_is_refused_naming_the_session(redis):
    store = sessions(redis)
    with store.locked("maze", "s-2", wait_s=5.0):
        with pytest.raises(Conflict) as refused, store.locked("maze", "s-2", wait_s=0.2):
            pass
    assert refused.value.details["field"] == "session_id"
