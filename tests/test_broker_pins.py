"""Pins: the Celery and kombu internals ``tasks/broker`` relies on, checked against the
installed versions with a real Redis.

Every check fails naming the private API that behaves differently; the list, and why
each one matters, is the docstring of ``tasks/broker/__init__.py``. After upgrading
Celery or kombu, re-read that list against the new code before changing a pin here.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from typing import Any

import pytest
from celery.backends.redis import RedisBackend
from kombu.transport import redis as kombu_redis
from kombu.utils.objects import cached_property
from redis.sentinel import SentinelManagedConnection

import miners.tasks  # noqa: F401 - registers mia.generate, which Celery's Request looks up
import tasks.broker
from tasks.broker import transport
from tasks.broker.backend import ResultBackend
from tasks.broker.layout import (
    KOMBU_PRIORITY_SEP,
    KOMBU_PRIORITY_STEPS,
    UNACKED,
    UNACKED_INDEX,
)
from tests.celery_fixtures import changed
from tests.conftest import ROOT
from tests.requirement_files import pins


@dataclass(frozen=True)
class A:
    """A pinned attribute that must be an instance of ``kind`` (a descriptor, a tuple)."""

    kind: type


# Each private API tasks/broker uses: its signature as "(...)", what it must be an
# instance of, or the value it must have.
PINS: dict[str, object] = {
    "kombu.transport.redis.QoS.append": "(self, message, delivery_tag)",
    "kombu.transport.redis.Channel.basic_consume": "(self, queue, *args, **kwargs)",
    "kombu.transport.virtual.Channel.basic_consume": (
        "(self, queue, no_ack, callback, consumer_tag, **kwargs)"
    ),
    "kombu.transport.redis.Channel.global_keyprefix": "",
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
    "kombu.transport.virtual.Transport._callbacks",  # tests/test_delivery_records.py
}
# Our overrides, with the stock method each one replaces (same parameters).
OVERRIDES = [
    (transport.QoS.append, kombu_redis.QoS.append),
    (transport.QoS.ack, kombu_redis.QoS.ack),
    (transport.QoS.reject, kombu_redis.QoS.reject),
    (transport.Channel.basic_consume, kombu_redis.Channel.basic_consume),
    (transport.Channel._get_pool, kombu_redis.Channel._get_pool),
    (transport.Channel.conn_or_acquire, kombu_redis.Channel.conn_or_acquire),
    (transport.Channel._put, kombu_redis.Channel._put),
    (transport.SentinelChannel._get_pool, kombu_redis.SentinelChannel._get_pool),
    (ResultBackend._store_result, RedisBackend._store_result),
    (ResultBackend.on_task_call, RedisBackend.on_task_call),
]


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
