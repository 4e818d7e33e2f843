"""Pins, continued: kombu's Redis transport as ``tasks/broker`` uses it (its unacked
bookkeeping, its connection pool, publishing, the priority lists, the delivery wait),
checked against the installed kombu with a real Redis. The failure names the private API
(``tests/celery_fixtures.changed``); the list is ``tasks/broker/__init__.py``'s docstring.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection
from kombu.utils.functional import retry_over_time

import miners.tasks  # noqa: F401 - registers mia.generate, which Celery's Request looks up
from tasks.broker import qos, transport
from tasks.broker.layout import KOMBU_PRIORITY_STEPS, list_for, queue_lists, unacked_message
from tasks.broker.transport import confirming
from tasks.dispatch import MAX_PRIORITY
from tasks.keys import SHARED_QUEUE, Keys
from tasks.replication import Replicas
from tests.celery_fixtures import changed, only

QUEUE = "pins"
KEYS = Keys("mia")
PREFIXED = {"global_keyprefix": KEYS.broker_prefix}  # as tasks.celery_app sets it


def publish(conn: Connection, body: object, priority: int = 0, queue: str = QUEUE) -> None:
    conn.Producer().publish(body, routing_key=queue, priority=priority, retry=False)


@pytest.fixture
def stock(redis_url: str, redis: redis_lib.Redis) -> Iterator[Connection]:
    """A kombu connection on kombu's own Redis transport (the flushed test DB), with the
    key prefix the service gives it."""
    with Connection(redis_url, transport_options=PREFIXED) as conn:
        yield conn


@pytest.fixture
def ours(redis_url: str, redis: redis_lib.Redis) -> Iterator[Connection]:
    """The same on our transport."""
    with Connection(redis_url, transport=transport.Transport, transport_options=PREFIXED) as conn:
        yield conn


# -- kombu's transport ---------------------------------------------------------------------


def test_kombu_notes_a_delivery_in_unacked_as_our_qos_writes_it(stock, ours, redis, monkeypatch):
    """Stock kombu's ``QoS.append`` and ours (``_note_delivery``) write the same bytes,
    so kombu's visibility timeout, our reaper and ``settle.lua`` read both alike."""
    monkeypatch.setattr(qos, "delivery_notes", [])
    channel = stock.default_channel
    publish(stock, {"n": 1}, priority=5)
    listed = redis.lindex(KEYS.queue_list(QUEUE, 5), 0)
    message = channel.basic_get(QUEUE)  # kombu's own QoS.append
    tag = message.delivery_tag
    kombu_wrote = redis.hget(KEYS.unacked, tag)
    assert message._raw == json.loads(listed), changed(
        "kombu.transport.virtual.Message._raw", "it is not the message as it lay on its list"
    )
    assert kombu_wrote is not None and redis.zscore(KEYS.unacked_index, tag) is not None, changed(
        "kombu.transport.redis.QoS.append", f"it wrote no {KEYS.unacked}/{KEYS.unacked_index} entry"
    )
    redis.delete(KEYS.unacked, KEYS.unacked_index)
    transport.QoS(ours.default_channel)._note_delivery(message, tag)
    assert redis.hget(KEYS.unacked, tag) == kombu_wrote, changed(
        "kombu.transport.redis.QoS.append", f"kombu stores {kombu_wrote!r}, ours otherwise"
    )
    assert redis.zscore(KEYS.unacked_index, tag) is not None
    raw, exchange, routing_key = unacked_message(kombu_wrote)
    assert (json.loads(raw), exchange, routing_key) == (json.loads(listed), "", QUEUE)


def test_kombu_puts_back_a_delivery_our_qos_noted(stock, ours, redis, monkeypatch):
    """A miner that dies leaves its entry; kombu's visibility timeout restores it."""
    monkeypatch.setattr(qos, "delivery_notes", [])
    channel = stock.default_channel
    publish(stock, {"n": 1}, priority=5)
    message = channel.basic_get(QUEUE, no_ack=True)
    transport.QoS(ours.default_channel)._note_delivery(message, message.delivery_tag)
    channel.qos.restore_by_tag(message.delivery_tag)
    back = json.loads(only(redis.lrange(KEYS.queue_list(QUEUE, 5), 0, -1)))
    assert back["properties"]["delivery_tag"] == message.delivery_tag, changed(
        "kombu.transport.redis.QoS.restore_by_tag", "it did not put back what our QoS wrote"
    )
    assert redis.hlen(KEYS.unacked) == 0


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
    with Connection(redis_url, transport=transport.Transport, transport_options=PREFIXED) as ours:
        with confirming(replicas) as confirmation:
            publish(ours, {"n": 1}, priority=5)
        assert confirmation.pending is not None
        assert confirmation.pending.asked == 0  # no WAIT sent, ROLE only
        assert replicas.confirmed(confirmation.pending)  # alone, and not behind Sentinel
        publish(ours, {"n": 1}, priority=5)  # kombu's own _put
    ours_raw, kombus_raw = redis.lrange(KEYS.queue_list(QUEUE, 5), 0, -1)
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
    for name in KEYS.queue_lists(QUEUE):
        on_it = [p for p in range(MAX_PRIORITY + 1) if KEYS.queue_list(QUEUE, p) == name]
        held = [json.loads(m)["properties"]["priority"] for m in redis.lrange(name, 0, -1)]
        assert held == on_it[::-1], changed(
            "kombu.transport.redis.Channel._q_for_pri", f"{name!r} holds priorities {held}"
        )
    recovered = json.loads(redis.lindex(KEYS.queue_list(QUEUE, 6), 0))
    recovered["body"], recovered["properties"]["body_encoding"] = '"recovered"', None
    redis.rpush(KEYS.queue_list(QUEUE, 6), json.dumps(recovered))  # as recover.lua does
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
