"""Every Lua script touches only the keys its call declares, the rule a Redis Cluster
(and managed Redis) holds scripts to (issue 23, point 2; docs/scaling.md): Redis itself
checks it, each call running as an ACL user allowed exactly those keys
(tests/declared_keys.py). The spread families, the breakers, the dispatch family
(heartbeat, reserve, release, reap) and the broker (lease, sweep, submit, settle,
recover); and the check itself refuses a key a call did not declare."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis as redis_lib
from redis.cluster import key_slot

from tasks.breaker import Breakers
from tasks.dispatch import MAX_PRIORITY, Dispatcher
from tasks.jobs import Job
from tasks.keys import SHARED_QUEUE, Keys
from tasks.lua import Scripts
from tasks.selector import DRAINED, Affinity, RedisSelector
from tasks.settings import Settings
from tests.celery_fixtures import NoMiner
from tests.conftest import expire_heartbeat
from tests.declared_keys import declared_only
from web.fleet.leases import LeaseBook
from web.fleet.registry import Heartbeat, Registry

KEYS = Keys("mia")


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def one_slot(keys: list[str]) -> bool:
    return len({key_slot(k.encode()) for k in keys}) == 1


def test_the_cluster_ready_scripts_touch_only_the_keys_they_declare(redis):
    job = uuid.uuid4().hex
    partial, abort = KEYS.partial(job), KEYS.abort(job)
    other = uuid.uuid4().hex
    fresh = KEYS.partial(other)
    calls = [
        ("rate_limit", [KEYS.rate("p", "client:a")], [2, 1.0]),
        ("store_result", [KEYS.result(job)], [json.dumps({"status": "SUCCESS"}), 60, ""]),
        ("claim", [partial, abort], ["attempt-1", 60]),
        ("append", [partial], ["attempt-1", "hello", 1, "0", 60, "mia:reply:x", "{}", 0]),
        ("append", [partial, abort], ["attempt-2", "hi", 1, "2", 60, "mia:reply:x", "{}"]),
        ("append", [fresh, KEYS.abort(other)], ["attempt-3", "hi", 1, "2", 60, "mia:reply:x", ""]),
        ("sessions_lru", [KEYS.sessions], [KEYS.session("p", "s1"), 1000.0, 1800, 10]),
    ]
    breaker = Breakers(redis, Scripts(redis), KEYS, Settings(breaker_failures=1))
    calls += [("breaker", *breaker._call("m1", ok)) for ok in (False, True)]
    with declared_only(redis) as run:
        answers = [run(name, keys, args) for name, keys, args in calls]
        assert one_slot([partial, abort]) and one_slot([KEYS.breakers, KEYS.failstreak])
    assert answers[2] == [b"", 0, 0]  # nothing so far, not aborted
    assert answers[3] == 1  # the claiming attempt may add
    assert answers[4] == 0  # a first piece refused: attempt-1 claimed the answer
    assert answers[5] == [1, b"", 0, 0]  # a first piece takes a new answer: added
    assert answers[-2:] == [b"opened", b"closed"]
    assert redis.hget(partial, "text") == b"hello"


def test_the_legacy_submit_and_the_recovery_scripts_touch_only_the_keys_they_declare(redis):
    """submit.lua (a legacy miner's result), settle.lua (a push miner's job done: its
    note and kombu's unacked entry go) and recover.lua (a dead miner's job back on a
    queue) name every key they touch; each call here takes its longest path."""
    job, held, meta = uuid.uuid4().hex, KEYS.held("m1"), json.dumps({"status": "SUCCESS"})
    redis.hset(KEYS.lease(job), mapping={"miner": "m1", "lease_id": "l1"})
    redis.zadd(KEYS.leases, {job: time.time() + 60})
    redis.hset(KEYS.unacked, mapping={"tag1": "[]", "tag2": "[]"})
    redis.zadd(KEYS.unacked_index, {"tag1": 1, "tag2": 2})
    redis.hset(held, mapping={job: "tag1", "other": "tag2"})
    submit = [KEYS.lease(job), KEYS.leases, KEYS.result(job), KEYS.job(job)]
    settle = [KEYS.result(job), held, KEYS.unacked_index, KEYS.unacked]
    shared = KEYS.queue_list(SHARED_QUEUE, 0)
    recover = [KEYS.unacked, KEYS.unacked_index, shared, held]
    with declared_only(redis) as run:
        assert run("submit", submit, [job, "m1", "l1", meta, 60, ""]) == b"stored"
        assert run("settle", settle, [job, "tag1"]) == 1
        assert run("recover", recover, ["tag", "tag2", "the message", "other"]) == 1
    assert redis.hkeys(KEYS.unacked) == [] and redis.hkeys(held) == []
    assert redis.lrange(shared, 0, -1) == [b"the message"]


def test_reap_touches_only_the_keys_it_declares_and_reads_only_the_silent(redis):
    """reap.lua is told its candidates and their index sets (the first pass reads every
    miner, later ones only those silent for a TTL), and forgets only the dead. Keys of
    its own: any web process on this Redis database (one another test left running,
    say) reaps ``mia``'s miners every half second and could forget one first."""
    own = Keys(f"reap-{uuid.uuid4().hex[:8]}")
    registry = Registry(redis, own, ttl_s=30)
    for name in ("a", "b", "c"):
        registry.beat(Heartbeat(name, "available", 1, 1, ["echo", name], "echo"))
    with declared_only(redis) as run:
        checked = Registry(
            redis, own, ttl_s=30, scripts=lambda name, keys, args: run(name, keys, args)
        )
        for dead in ("b", "a"):  # a full pass, then a pass over the silent only
            expire_heartbeat(redis, own, dead)
            redis.zadd(own.last_seen, {dead: time.time() - 60})  # its TTL ran out
            assert checked.reap() == 1
            assert not redis.sismember(own.miners, dead)
    assert redis.zrange(own.index, 0, -1) == redis.zrange(own.index_for("echo"), 0, -1) == [b"c"]
    assert redis.zcard(own.index_for("a")) == redis.zcard(own.index_for("b")) == 0
    assert redis.hkeys(own.indexed) == [b"c"]


def members(redis, model: str = "") -> list[bytes]:
    return list(redis.zrange(KEYS.index_for(model), 0, -1))


def test_beat_and_release_touch_only_the_keys_they_declare(redis):
    """They declare the index sets of the models they know of; when the miner's record
    names others (another process wrote it), the script refuses before writing and
    names the record, and the caller calls again with its sets."""
    with declared_only(redis) as run:
        checked = lambda name, keys, args: run(name, keys, args)  # noqa: E731
        one, other = (Registry(redis, KEYS, ttl_s=30, scripts=checked) for _ in range(2))
        one.beat(Heartbeat("m1", "available", 2, 2, ["echo"], "echo"))
        other.beat(Heartbeat("m1", "available", 2, 2, ["x"], "echo"))  # knew nothing of echo
        assert (members(redis, "echo"), members(redis, "x")) == ([], [b"m1"])
        one.beat(Heartbeat("m1", "available", 2, 2, ["y"], "echo"))  # thought it was echo
        assert (members(redis, "x"), members(redis, "y")) == ([], [b"m1"])
        chooser = RedisSelector(redis, checked, KEYS, 60)
        releaser = RedisSelector(redis, checked, KEYS, 60)
        for model in ("y", "z"):
            if model == "z":  # the release thinks it is still y
                one.beat(Heartbeat("m1", "available", 2, 2, ["z"], "echo"))
            assert chooser.choose(Job(said("hi"), model=model)) == "m1"
            assert int(redis.hget(KEYS.inflight, "m1")) == 1
            releaser.release("m1")
            assert int(redis.hget(KEYS.inflight, "m1")) == 0
            assert redis.zscore(KEYS.index_for(model), "m1") == redis.zscore(KEYS.index, "m1")
        one.beat(Heartbeat("m1", "offline", 0, 0, [], "echo"))
        assert members(redis) == members(redis, "z") == []


def test_a_miner_that_says_its_models_releases_without_a_refusal_after_a_change(redis):
    registry, scripts = Registry(redis, KEYS, ttl_s=30), Scripts(redis)
    registry.beat(Heartbeat("m1", "available", 2, 2, ["a"], "echo"))
    chooser, calls = RedisSelector(redis, scripts, KEYS, 60), []
    releaser = RedisSelector(redis, lambda *call: calls.append(call[0]) or scripts(*call), KEYS, 60)
    assert chooser.choose(Job(said("hi"), model="a")) == "m1"
    releaser.release("m1")  # its record named a
    registry.beat(Heartbeat("m1", "available", 2, 2, ["b"], "echo"))
    releaser.serving("m1", ["b"])  # the miner's own heartbeat says b
    assert chooser.choose(Job(said("hi"), model="b")) == "m1"
    calls.clear()
    releaser.release("m1")
    assert calls == ["release"]  # one call: not refused
    assert int(redis.hget(KEYS.inflight, "m1")) == 0


def test_the_lease_sweep_touches_only_the_keys_it_declares(redis, settings):
    """The sweep reads the jobs due, declares their lease and result keys, and
    expire.lua puts one back on shared (attempts left) and fails the other."""
    for job_id, attempts in (("j1", 1), ("j2", 3)):
        message = json.dumps({"headers": {"id": job_id}, "body": ""})
        lease = {"miner": "m1", "message": message, "attempts": attempts, "list": 1}
        redis.hset(KEYS.lease(job_id), mapping=lease)
        redis.zadd(KEYS.leases, {job_id: time.time() - 5})
    redis.zadd(KEYS.leases, {"j3": time.time() + 60})  # not due
    with declared_only(redis) as run:
        checked = lambda name, keys, args: run(name, keys, args)  # noqa: E731
        book = LeaseBook(redis, checked, KEYS, settings.with_overrides(max_attempts=3))
        assert book.sweep() == (1, 1)
        assert book.sweep() == (0, 0)
    assert sum(redis.llen(name) for name in KEYS.queue_lists(SHARED_QUEUE)) == 1
    assert json.loads(redis.get(KEYS.result("j2")))["status"] == "FAILURE"
    assert redis.get(KEYS.result("j1")) is None
    assert redis.zrange(KEYS.leases, 0, -1) == [b"j3"]


def test_a_lease_touches_only_the_keys_it_declares_and_looks_again(celery_app, redis, settings):
    """A take declares the lease keys of the jobs at the heads of the shared lists; a job
    that got to a head in between is put back where it was and taken on the next look."""
    dispatcher = Dispatcher(celery_app, NoMiner())
    first, second = Job(said("first")), Job(said("second"))
    dispatcher.submit(first, shared_only=True)
    calls = []

    def checked(name, keys, args):
        calls.append(args[5:])  # the jobs the take named
        if len(calls) == 1:  # another web process's job gets to the head first
            dispatcher.submit(second, shared_only=True)
            head = KEYS.queue_list(SHARED_QUEUE, MAX_PRIORITY - second.priority)
            redis.rpush(head, redis.lpop(head))
        return run(name, keys, args)

    with declared_only(redis) as run:
        book = LeaseBook(redis, checked, KEYS, settings)
        taken = [book.take("m1"), book.take("m1")]
    assert [lease.job.job_id for lease in taken] == [second.job_id, first.job_id]
    assert calls[:2] == [[first.job_id], [second.job_id]]
    assert redis.zcard(KEYS.leases) == 2


def test_reserve_touches_only_the_keys_it_declares_and_calls_again_for_a_new_model(redis):
    """reserve.lua reads each miner's heartbeat, load and drain from hashes, and declares
    the index sets of every model it knows the fleet serves. When the miner it chooses
    names a model it did not know of (the miner changed since), it refuses before
    writing anything and the caller calls again with that model's sets. Every path on
    the way: a dead miner and a drained one passed over, an affinity, a target device,
    shared when every slot is taken."""
    registry = Registry(redis, KEYS, ttl_s=30)
    for name in ("dead", "drained", "good"):
        registry.beat(Heartbeat(name, "available", 1, 1, ["echo"], "echo"))
    expire_heartbeat(redis, KEYS, "dead")
    registry.drain("drained", "test", ttl_s=60)
    calls: list[str] = []
    with declared_only(redis) as run:

        def checked(name, keys, args):
            calls.append(name)
            return run(name, keys, args)

        selector = RedisSelector(redis, checked, KEYS, 60, affinity=Affinity(ttl_s=60))
        assert selector.choose(Job(said("hi"), model="echo", affinity="s1")) == "good"
        assert redis.get(KEYS.affinity("s:s1")) == b"good"
        selector.release("good")
        registry.beat(Heartbeat("good", "available", 1, 1, ["echo", "new"], "echo"))
        calls.clear()
        assert selector.choose(Job(said("again"), model="echo", affinity="s1")) == "good"
        assert calls == ["reserve", "reserve"]  # refused, then with the sets of "new"
        assert redis.zscore(KEYS.index_for("new"), "good") == redis.zscore(KEYS.index, "good")
        assert selector.choose(Job(said("any"))) is None  # every slot taken: shared
        assert selector.choose(Job(said("here"), device="good")) == "good"  # queues on it
        assert selector.choose(Job(said("here"), device="drained")) == DRAINED
    assert int(redis.hget(KEYS.inflight, "good")) == 2
    assert redis.hget(KEYS.inflight, "drained") is None


def test_a_key_the_call_did_not_declare_is_refused_by_the_check(redis):
    """The check is real: a script that builds a key name (here the miner's heartbeat
    key, as reserve.lua read it before) fails under it."""
    Registry(redis, KEYS, ttl_s=30).beat(Heartbeat("m1", "available", 2, 2, ["echo"], "echo"))
    builds = "return redis.call('GET', ARGV[1] .. ':hb:' .. ARGV[2])"
    refused = "can't access at least one of the keys"
    with declared_only(redis) as run, pytest.raises(redis_lib.ResponseError, match=refused):
        run("builds", [], ["mia", "m1"], lua=builds)
