"""The per-client rate limit: a token bucket per project and client, kept in Redis
(``tasks/lua/rate_limit.lua``), so every gateway replica shares it.

Who the client is: MQTT 3.1.1 does not tell a subscriber who published a message, so
the payload says. Its ``client_id`` when it has one, else its ``session_id`` (which
every message over MQTT has: web.mqtt.turns). A
client that lies about its id escapes the limit: the broker's per-user ACL (docs/mqtt.md)
is what stops a user from writing where it should not; this limit stops honest clients
gone wild (a retry loop, a stuck button) from filling the queue.

Over the limit the message is answered with an error naming the limit and nothing is
queued: the bucket is checked before the turn's first job is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from tasks.connections import AnyRedis
from tasks.errors import ConfigError, MiaError, ServiceUnavailable, ValidationError
from tasks.keys import Keys
from tasks.lua import Scripts

CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RateLimited(MiaError):
    status = 429
    code = "rate_limited"


def client_identity(body: dict[str, Any], session_id: str) -> str:
    """``client:<client_id>``, else ``session:<session_id>``; a bad ``client_id`` raises
    ValidationError naming it."""
    value = body.get("client_id")
    if value is not None:
        if not isinstance(value, str) or not CLIENT_ID.fullmatch(value):
            raise ValidationError("client_id must be 1-64 of A-Z a-z 0-9 _ . -", "client_id")
        return f"client:{value}"
    return f"session:{session_id}"


@dataclass(frozen=True)
class RateLimit:
    """``limit`` messages per ``period_s`` per client, up to ``burst`` at once (0: off)."""

    redis: AnyRedis
    scripts: Scripts
    keys: Keys
    limit: int
    period_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.limit > 0 and (self.period_s <= 0 or self.burst < 0):
            raise ConfigError(
                "MIA_MQTT_RATE_PERIOD_S must be above 0, MIA_MQTT_RATE_BURST 0 or more"
            )

    def describe(self) -> str:
        return (
            f"rate limit: {self.limit} messages per {self.period_s:g} s per client "
            f"(bursts of up to {self.size()})"
        )

    def size(self) -> int:
        """The bucket's size: ``burst``, or ``limit`` when burst is 0."""
        return self.burst if self.burst > 0 else self.limit

    def take(self, project: str, client: str) -> None:
        """One token of ``client``'s bucket, or RateLimited naming the limit."""
        if self.limit <= 0:
            return
        try:
            taken, value = self.scripts(
                "rate_limit",
                [self.keys.rate(project, client)],
                [self.size(), self.limit / self.period_s],
            )
        except (redis.RedisError, RedisClusterException) as exc:
            raise ServiceUnavailable(f"Redis does not answer: {exc}") from exc
        if not int(taken):
            raise RateLimited(
                self.describe(),
                limit={"messages": self.limit, "period_s": self.period_s, "burst": self.size()},
                client=client,
                retry_after_s=round(int(value) / 1000, 3),
            )
