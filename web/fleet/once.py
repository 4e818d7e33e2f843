"""Say a thing once: whether a notice (legacy endpoints' ignored fields) is new.

The memory is a Redis sorted set of digests by when each was last seen: an LRU set
shared by every web process and replica, so a notice is logged once across the fleet
and across restarts, not once per process. It holds at most ``capacity`` digests (the
least recently seen go first), however many distinct notices clients make up. In
front of it each process keeps a small LRU of its own, so a notice it has already
seen (a legacy miner sending the same stray field with every result) costs no round
trip. A digest this process dropped but Redis kept is still not logged twice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict

import redis

log = logging.getLogger(__name__)

CAPACITY = 10_000  # digests kept in Redis (about 1 MB at most)
LOCAL_CAPACITY = 1024  # digests each process remembers without asking Redis


class Once:
    """``first(*parts)``: True the first time these parts are seen (then False)."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        capacity: int = CAPACITY,
        local_capacity: int = LOCAL_CAPACITY,
    ) -> None:
        self._redis = client
        self._key = key
        self._capacity = capacity
        self._local_capacity = local_capacity
        self._local: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, *parts: str) -> bool:
        digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()
        if self._seen_here(digest):
            return False
        try:
            new = self._remember(digest)
        except redis.RedisError as exc:  # a notice said twice beats a request failed
            log.debug("once: Redis did not answer (%s); saying it anyway", exc)
            return True
        with self._lock:
            self._local[digest] = None
            if len(self._local) > self._local_capacity:
                self._local.popitem(last=False)
        return new

    def _seen_here(self, digest: str) -> bool:
        with self._lock:
            if digest not in self._local:
                return False
            self._local.move_to_end(digest)
            return True

    def _remember(self, digest: str) -> bool:
        """Add ``digest`` to the Redis set (or refresh it) and trim the set; True if new."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._key, {digest: time.time()})
        pipe.zremrangebyrank(self._key, 0, -(self._capacity + 1))
        added, _ = pipe.execute()
        return bool(added)
