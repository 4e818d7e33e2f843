"""Pins: the Celery and kombu internals ``tasks/broker`` relies on, checked against the
installed versions with a real Redis.

Every check fails naming the private API that behaves differently; the list, and why
each one matters, is the docstring of ``tasks/broker/__init__.py``. After upgrading
Celery or kombu, re-read that list against the new code before changing a pin here.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult
from celery.worker.request import Request
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils.functional import retry_over_time
from kombu.utils.objects import cached_property
from redis.sentinel import SentinelManagedConnection

import miners.tasks  # noqa: F401 - registers mia.generate, which Celery's Request looks up
import tasks.broker
from tasks.broker import transport
from tasks.broker.backend import ResultBackend, StoreCall, store_along
from tasks.broker.layout import (
    KOMBU_PRIORITY_SEP,
    KOMBU_PRIORITY_STEPS,
    UNACKED,
    UNACKED_INDEX,
    list_for,
    queue_lists,
    unacked_message,
)
from tasks.broker.messages import (
    celery_meta,
    decode_message,
    failure_meta,
    priority,
    redeliver,
    rewritable,
    task_id,
)
from tasks.broker.transport import confirming
from tasks.celery_app import create_celery
from tasks.dispatch import MAX_PRIORITY, Dispatcher
from tasks.jobs import GENERATE, Job
from tasks.keys import SHARED_QUEUE, result_key, text
from tasks.lua import source
from tasks.replication import Replicas
from tasks.settings import Settings
from tests.conftest import ROOT
from tests.requirement_files import pins

QUEUE = "pins"


@dataclass(frozen=True)
class A:
    """A pinned attribute that must be an instance of ``kind`` (a descriptor, a tuple)."""

    kind: type


# Each private API tasks/broker uses: its signature as "(...)", what it must be an
# instance of, or the value it must have.
PINS: dict[str, object] = {
    "kombu.transport.redis.QoS.append": "(self, message, delivery_tag)",
    "kombu.transport.redis.QoS.pipe_or_acquire": "(self, pipe=None, client=None)",
    "kombu.transport.redis.QoS.unacked_key": A(cached_property),
    "kombu.transport.redis.QoS.unacked_index_key": A(cached_property),
    "kombu.transport.redis.QoS.ack": "(self, delivery_tag)",
    "kombu.transport.redis.QoS.reject": "(self, delivery_tag, requeue=False)",
    "kombu.transport.virtual.QoS.append": "(self, message, delivery_tag)",
    "kombu.transport.virtual.QoS.ack": "(self, delivery_tag)",
    "kombu.transport.redis.Channel._get_pool": "(self, asynchronous=False)",
    "kombu.transport.redis.Channel._connparams": "(self, asynchronous=False)",
    "kombu.transport.redis.Channel.keyprefix_fanout": "/{db}.",
    "kombu.transport.redis.Channel._create_client": "(self, asynchronous=False)",
    "kombu.transport.redis.Channel.conn_or_acquire": "(self, client=None)",
    "kombu.transport.redis.Channel.from_transport_options": A(tuple),
    "kombu.transport.redis.Channel.QoS": kombu_redis.QoS,
    "kombu.transport.redis.Transport.Channel": kombu_redis.Channel,
    "kombu.utils.functional.retry_over_time": (
        "(fun, catch, args=None, kwargs=None, errback=None, max_retries=None, "
        "interval_start=2, interval_step=2, interval_max=30, callback=None, timeout=None)"
    ),
    "celery.backends.redis.RedisBackend._store_result": (
        "(self, task_id, result, state, traceback=None, request=None, **kwargs)"
    ),
    "celery.backends.redis.RedisBackend._get_result_meta": (
        "(self, result, state, traceback, request, format_date=True, encode=False)"
    ),
    "celery.backends.redis.RedisBackend._MAX_STR_VALUE_SIZE": 512 * 1024 * 1024,
    "celery.backends.redis.RedisBackend.get_key_for_task": "(self, task_id, key='')",
    "celery.backends.redis.RedisBackend.on_task_call": "(self, producer, task_id)",
    "celery.backends.redis.RedisBackend.client": A(cached_property),
    "kombu.transport.redis.Channel._q_for_pri": "(self, queue, pri)",
    "kombu.transport.redis.Channel.priority_steps": list(KOMBU_PRIORITY_STEPS),
    "kombu.transport.redis.Channel.sep": KOMBU_PRIORITY_SEP,
    "kombu.transport.redis.Channel.unacked_key": UNACKED,
    "kombu.transport.redis.Channel.unacked_index_key": UNACKED_INDEX,
    "kombu.transport.redis.Channel._put": "(self, queue, message, **kwargs)",
    "kombu.transport.virtual.Channel._get_message_priority": "(self, message, reverse=False)",
    "kombu.transport.redis.SentinelChannel._get_pool": "(self, asynchronous=False)",
    "kombu.transport.redis.SentinelChannel.from_transport_options": A(tuple),
    "kombu.transport.redis.SentinelChannel.connection_class": SentinelManagedConnection,
    "kombu.transport.redis.SentinelTransport.Channel": kombu_redis.SentinelChannel,
    "celery.backends.redis.SentinelBackend._get_pool": "(self, **params)",
    "celery.backends.redis.SentinelBackend._params_from_url": "(self, url, defaults)",
    "celery.backends.redis.RedisBackend._transport_options": A(cached_property),
    "celery.app.base.Celery.thread_oid": A(property),
    "celery.utils.nodenames.anon_nodename": (
        "(hostname: 'str | None' = None, prefix: 'str' = 'gen') -> 'str'"
    ),
}
# Set on instances, so checked on real ones by the behavioural tests below.
ON_INSTANCES = {
    "kombu.transport.virtual.Message._raw",
    "celery.backends.redis.RedisBackend.expires",
    "celery.backends.redis.RedisBackend.failure_expires",
    "kombu.transport.redis.Channel._expires",
    "kombu.transport.redis.Channel._sentinel_manager",
    "kombu.transport.redis.Channel._async_sentinel_manager",
    "kombu.connection.Connection.alt",
}
# Our overrides, with the stock method each one replaces (same parameters).
OVERRIDES = [
    (transport.QoS.append, kombu_redis.QoS.append),
    (transport.QoS.ack, kombu_redis.QoS.ack),
    (transport.QoS.reject, kombu_redis.QoS.reject),
    (transport.Channel._get_pool, kombu_redis.Channel._get_pool),
    (transport.Channel.conn_or_acquire, kombu_redis.Channel.conn_or_acquire),
    (transport.Channel._put, kombu_redis.Channel._put),
    (transport.SentinelChannel._get_pool, kombu_redis.SentinelChannel._get_pool),
    (ResultBackend._store_result, RedisBackend._store_result),
    (ResultBackend.on_task_call, RedisBackend.on_task_call),
]


def changed(api: str, what: str) -> str:
    """The failure message: which private API, what changed, and what to do."""
    return (
        f"{api}: {what}. The installed Celery/kombu behave differently under "
        "tasks/broker: re-check it against the new version (the list is in "
        "tasks/broker/__init__.py)"
    )


def resolve(dotted: str) -> object:
    """The attribute as its class defines it (descriptors not invoked)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: object = import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = inspect.getattr_static(found, name)
        return found
    raise ImportError(dotted)


def pinned(package: str) -> str:
    """Its version in requirements.txt (or a file it includes: requirements-gateway.txt)."""
    found = pins(ROOT / "requirements.txt")
    assert package in found, f"{package} is not pinned in requirements.txt"
    return found[package]


def parameters(function: Any) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def publish(conn: Connection, body: object, priority: int = 0, queue: str = QUEUE) -> None:
    conn.Producer().publish(body, routing_key=queue, priority=priority, retry=False)


class NoMiner:
    """A selector with no miner free: dispatch publishes on ``shared``."""

    def choose(self, job: Job, shared_only: bool = False, exclude: str = "") -> str | None:
        return None

    def release(self, miner_id: str) -> None:
        return None

    def wake_shared(self, job_id: str) -> None:
        return None


def only(values: list[bytes]) -> bytes:
    assert len(values) == 1, values
    return values[0]


def a_job() -> Job:
    return Job(
        messages=[{"role": "user", "content": "héllo \u2603"}],
        model="m",
        stop=["\n"],
        seed=7,
        priority=3,
        request_id="rid-pins",
    )


@pytest.fixture
def stock(redis_url: str, redis: redis_lib.Redis) -> Iterator[Connection]:
    """A kombu connection on kombu's own Redis transport (the flushed test DB)."""
    with Connection(redis_url) as conn:
        yield conn


@pytest.fixture
def celery_app(settings: Settings, redis: redis_lib.Redis) -> Iterator[Celery]:
    """The service's Celery app (our transport and result backend) on the test Redis."""
    app = create_celery("pins", settings)
    try:
        yield app
    finally:
        app.close()


# -- the versions and the private attributes themselves ----------------------------------


@pytest.mark.parametrize("package", ["celery", "kombu"])
def test_the_installed_version_is_the_pinned_one(package):
    assert version(package) == pinned(package), changed(
        package,
        f"{version(package)} is installed where requirements.txt pins {pinned(package)}",
    )


@pytest.mark.parametrize("api", sorted(PINS))
def test_each_private_api_is_there_as_the_code_uses_it(api):
    try:
        found = resolve(api)
    except (ImportError, AttributeError) as exc:
        pytest.fail(changed(api, f"it is gone ({exc!r})"))
    expected = PINS[api]
    if isinstance(expected, str) and expected.startswith("("):
        assert str(inspect.signature(found)) == expected, changed(
            api,
            f"its signature is {inspect.signature(found)}, not {expected}",
        )
    elif isinstance(expected, A):
        assert isinstance(found, expected.kind), changed(api, f"it is a {type(found)}")
    else:
        assert found == expected, changed(api, f"it is {found!r}, not {expected!r}")


@pytest.mark.parametrize("ours, stock_method", OVERRIDES, ids=lambda f: f.__qualname__)
def test_our_overrides_take_the_parameters_of_what_they_replace(ours, stock_method):
    assert parameters(ours) == parameters(stock_method), changed(
        stock_method.__qualname__, f"{inspect.signature(stock_method)} is not what we override"
    )


def test_the_list_in_the_broker_docstring_is_the_list_pinned_here():
    """A private API added to tasks/broker is listed there, and pinned here."""
    listed = set(re.findall(r"``((?:kombu|celery)\.[\w.]+)``", tasks.broker.__doc__ or ""))
    assert listed == set(PINS) | ON_INSTANCES


# -- kombu's transport ---------------------------------------------------------------------


def test_kombu_notes_a_delivery_in_unacked_as_our_qos_writes_it(stock, redis, monkeypatch):
    """Stock kombu's ``QoS.append`` and ours (``_note_delivery``) write the same bytes,
    so kombu's visibility timeout, our reaper and ``settle.lua`` read both alike."""
    monkeypatch.setattr(transport, "delivery_notes", [])
    channel = stock.default_channel
    publish(stock, {"n": 1}, priority=5)
    listed = redis.lindex(list_for(QUEUE, 5), 0)
    message = channel.basic_get(QUEUE)  # kombu's own QoS.append
    tag = message.delivery_tag
    kombu_wrote = redis.hget(UNACKED, tag)
    assert message._raw == json.loads(listed), changed(
        "kombu.transport.virtual.Message._raw", "it is not the message as it lay on its list"
    )
    assert kombu_wrote is not None and redis.zscore(UNACKED_INDEX, tag) is not None, changed(
        "kombu.transport.redis.QoS.append", f"it wrote no {UNACKED}/{UNACKED_INDEX} entry"
    )
    redis.delete(UNACKED, UNACKED_INDEX)
    transport.QoS(channel)._note_delivery(message, tag)
    assert redis.hget(UNACKED, tag) == kombu_wrote, changed(
        "kombu.transport.redis.QoS.append", f"kombu stores {kombu_wrote!r}, ours otherwise"
    )
    assert redis.zscore(UNACKED_INDEX, tag) is not None
    raw, exchange, routing_key = unacked_message(kombu_wrote)
    assert (json.loads(raw), exchange, routing_key) == (json.loads(listed), "", QUEUE)


def test_kombu_puts_back_a_delivery_our_qos_noted(stock, redis, monkeypatch):
    """A miner that dies leaves its entry; kombu's visibility timeout restores it."""
    monkeypatch.setattr(transport, "delivery_notes", [])
    channel = stock.default_channel
    publish(stock, {"n": 1}, priority=5)
    message = channel.basic_get(QUEUE, no_ack=True)
    transport.QoS(channel)._note_delivery(message, message.delivery_tag)
    channel.qos.restore_by_tag(message.delivery_tag)
    back = json.loads(only(redis.lrange(list_for(QUEUE, 5), 0, -1)))
    assert back["properties"]["delivery_tag"] == message.delivery_tag, changed(
        "kombu.transport.redis.QoS.restore_by_tag", "it did not put back what our QoS wrote"
    )
    assert redis.hlen(UNACKED) == 0


def test_our_channel_connects_as_kombus_with_one_client_and_a_waiting_pool(redis_url, redis):
    options = {"pool_timeout": 1.5, "delivery_retry_s": 7.0, "max_connections": 3}
    with (
        Connection(redis_url, transport_options=options) as stock,
        Connection(redis_url, transport=transport.Transport, transport_options=options) as ours,
    ):
        theirs, channel = stock.default_channel, ours.default_channel

        def plain(pool: Any) -> dict[str, Any]:
            kwargs = pool.connection_kwargs.items()
            return {k: v for k, v in kwargs if isinstance(v, str | int | float | None)}

        assert plain(channel.pool) == plain(theirs.pool), changed(
            "kombu.transport.redis.Channel._connparams", "our pool connects differently"
        )
        assert isinstance(channel.pool, redis_lib.BlockingConnectionPool)
        assert channel.pool.max_connections == theirs.pool.max_connections == 3
        assert channel.keyprefix_fanout == theirs.keyprefix_fanout, changed(
            "kombu.transport.redis.Channel.keyprefix_fanout", "it is no longer formatted so"
        )
        assert (channel.pool_timeout, channel.delivery_retry_s) == (1.5, 7.0), changed(
            "kombu.transport.redis.Channel.from_transport_options", "our options are not copied"
        )
        with channel.conn_or_acquire() as one, channel.conn_or_acquire() as two:
            assert one is two
        assert isinstance(channel.qos, transport.QoS)


def test_a_confirmed_publish_lands_where_kombus_own_does(redis_url, redis):
    """Inside ``confirming`` our ``_put`` writes the message itself (to send WAIT in
    the same round trip): the same list and bytes as kombu's ``_put``."""
    client = redis_lib.Redis.from_url(redis_url)
    replicas = Replicas(client, 1, 100)  # this Redis has no replica: nothing to wait for
    with Connection(redis_url, transport=transport.Transport) as ours:
        with confirming(replicas) as confirmation:
            publish(ours, {"n": 1}, priority=5)
        assert confirmation.pending is not None
        assert confirmation.pending.asked == 0  # no WAIT sent, ROLE only
        assert replicas.confirmed(confirmation.pending)  # alone, and not behind Sentinel
        publish(ours, {"n": 1}, priority=5)  # kombu's own _put
    ours_raw, kombus_raw = redis.lrange(list_for(QUEUE, 5), 0, -1)
    strip = {"delivery_tag": None}
    mine, theirs = json.loads(ours_raw), json.loads(kombus_raw)
    mine["properties"].update(strip)
    theirs["properties"].update(strip)
    assert mine == theirs, changed("kombu.transport.redis.Channel._put", "it publishes otherwise")
    client.close()


def test_the_lists_we_lease_from_are_the_ones_kombu_consumes(redis_url):
    with Connection(redis_url) as conn:
        channel = conn.default_channel
        expected = [channel._q_for_pri(SHARED_QUEUE, p) for p in KOMBU_PRIORITY_STEPS]
        assert channel.priority_steps == list(KOMBU_PRIORITY_STEPS)
        by_priority = [channel._q_for_pri(SHARED_QUEUE, p) for p in range(MAX_PRIORITY + 1)]
    assert queue_lists(SHARED_QUEUE) == expected, changed(
        "kombu.transport.redis.Channel._q_for_pri", f"kombu's lists are {expected}"
    )
    assert [list_for(SHARED_QUEUE, p) for p in range(MAX_PRIORITY + 1)] == by_priority


def test_kombu_serves_our_lists_lowest_step_first_from_the_right_end(stock, redis):
    """``lease.lua`` RPOPs ``queue_lists`` in order; ``recover.lua`` RPUSHes a job to be
    served next. Both hold only while kombu LPUSHes and serves from the right."""
    for p in range(MAX_PRIORITY + 1):
        publish(stock, p, priority=p)
    for name in queue_lists(QUEUE):
        on_it = [p for p in range(MAX_PRIORITY + 1) if list_for(QUEUE, p) == name]
        held = [json.loads(m)["properties"]["priority"] for m in redis.lrange(name, 0, -1)]
        assert held == on_it[::-1], changed(
            "kombu.transport.redis.Channel._q_for_pri", f"{name!r} holds priorities {held}"
        )
    recovered = json.loads(redis.lindex(list_for(QUEUE, 6), 0))
    recovered["body"], recovered["properties"]["body_encoding"] = '"recovered"', None
    redis.rpush(list_for(QUEUE, 6), json.dumps(recovered))  # as recover.lua does
    served = []
    while (message := stock.default_channel.basic_get(QUEUE, no_ack=True)) is not None:
        served.append(message.decode())
    assert served == [0, 1, 2, 3, 4, 5, "recovered", 6, 7, 8, 9], changed(
        "kombu.transport.redis.Channel.priority_steps", f"kombu served {served}"
    )


def test_retry_over_time_calls_back_as_the_delivery_wait_expects():
    """Our QoS.append's errback takes (exc, intervals, retries) and returns the wait."""
    outcomes = iter([redis_lib.ConnectionError("down"), "done"])
    seen: list[tuple[str, float, int]] = []

    def attempt() -> object:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def waiting(exc: Exception, intervals: Iterator[float], retries: int) -> float:
        seen.append((str(exc), next(intervals), retries))
        return 0.0

    found = retry_over_time(attempt, (redis_lib.ConnectionError,), errback=waiting, timeout=5)
    assert (found, seen) == ("done", [("down", 2.0, 0)]), changed(
        "kombu.utils.functional.retry_over_time", f"it called back with {seen}"
    )


# -- Celery's formats ----------------------------------------------------------------------


def test_a_job_celery_publishes_decodes_to_the_job_sent(celery_app, redis):
    job = a_job()
    Dispatcher(celery_app, NoMiner()).submit(job, shared_only=True)
    kombu_priority = MAX_PRIORITY - job.priority
    raw = only(redis.lrange(list_for(SHARED_QUEUE, kombu_priority), 0, -1))
    assert decode_message(raw) == job, changed("Celery's task message", f"it is {raw!r}")
    assert task_id(raw) == job.job_id
    assert priority(raw) == kombu_priority
    assert rewritable(raw)


def test_a_redelivered_message_is_what_celerys_worker_reads(celery_app, redis):
    """The reaper's rewrite, consumed through our transport and read by Celery's
    own worker ``Request``: the job, its new queue, marked redelivered, a new tag."""
    job = a_job()
    Dispatcher(celery_app, NoMiner()).submit(job, shared_only=True)
    raw = only(redis.lrange(list_for(SHARED_QUEUE, MAX_PRIORITY - job.priority), 0, -1))
    again = redeliver(raw, "gpu-pins", "pins")
    redis.rpush(list_for("gpu-pins", priority(again)), again)  # as recover.lua does
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
    redis.set(result_key("ok-1"), celery_meta("ok-1", states.SUCCESS, {"response": "hi"}))
    assert AsyncResult("ok-1", app=celery_app).get(timeout=5) == {"response": "hi"}
    redis.set(result_key("bad-1"), failure_meta("bad-1", "it broke"))
    with pytest.raises(RuntimeError, match="it broke"):
        AsyncResult("bad-1", app=celery_app).get(timeout=5)


def test_a_failure_written_by_hand_is_in_the_form_celery_writes(celery_app, redis):
    celery_app.backend.mark_as_failure("bad-2", RuntimeError("it broke"))
    celerys = json.loads(redis.get(result_key("bad-2")))
    ours = json.loads(failure_meta("bad-2", "it broke"))
    assert (set(ours), ours["result"]) == (set(celerys), celerys["result"]), changed(
        "Celery's result meta", f"Celery stores a failure as {celerys}"
    )


# -- our result backend ------------------------------------------------------------------


def test_our_backend_stores_what_celery_reads_and_keeps_the_first(celery_app, redis, settings):
    backend = celery_app.backend
    assert isinstance(backend, ResultBackend)
    assert text(backend.get_key_for_task("job-1")) == result_key("job-1"), changed(
        "celery.backends.redis.RedisBackend.get_key_for_task", "results moved"
    )
    backend.store_result("job-1", {"n": 1}, states.SUCCESS)
    backend.store_result("job-1", {"n": 2}, states.SUCCESS)
    backend.mark_as_failure("job-1", RuntimeError("late"))
    assert AsyncResult("job-1", app=celery_app).get(timeout=5) == {"n": 1}
    assert backend.expires == backend.failure_expires == settings.result_ttl_s, changed(
        "celery.backends.redis.RedisBackend.expires", "the TTLs are not result_expires"
    )
    assert 0 < redis.ttl(result_key("job-1")) <= settings.result_ttl_s


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
