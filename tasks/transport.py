"""kombu's Redis transport with one fix for speed: reuse the channel's Redis client.

Stock kombu builds a new ``redis.Redis`` object (on the same connection pool) for
every publish and every acknowledgement bookkeeping step; building one costs more
than the Redis round trip itself (about 0.3 ms here, measured with cProfile). The
client object holds no state of its own beyond the pool, so one per channel serves
the same connections. Selected with ``broker_transport`` in celeryconfig.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    @cached_property
    def _shared_client(self) -> Any:
        return self._create_client()  # type: ignore[no-untyped-call]

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._shared_client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
