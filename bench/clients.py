"""What the bench drives the product with besides HTTP: the public classes of ``tasks``
and ``web.fleet``, built here from the stack's Settings as any caller of the job client
would build them (the web tier's own objects stay inside its processes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
import requests

from tasks.connections import redis_client
from tasks.keys import Keys
from tasks.selector import RedisSelector
from tasks.settings import Settings
from web.fleet.client import JobClient
from web.fleet.core import build_core
from web.fleet.recovery import Reaper
from web.fleet.registry import Registry


@dataclass(frozen=True)
class Clients:
    """A job client (dispatch as the web tier does it), the fleet's registry and reaper,
    the miner selection alone, and the Redis and key names they share."""

    redis: redis.Redis
    keys: Keys
    selector: RedisSelector
    jobs: JobClient
    registry: Registry
    reaper: Reaper


@contextmanager
def connect(settings: Settings) -> Iterator[Clients]:
    """``Clients`` for the stack of ``settings``; its result listener closed on leaving
    (enter it after the stack's Redis, so that it closes first)."""
    core = build_core(settings, redis_client(settings), "bench")
    try:
        yield Clients(
            redis=core.redis,
            keys=core.keys,
            selector=core.selector,
            jobs=JobClient(core.redis, core.keys, core.dispatcher, core.waiter),
            registry=core.registry,
            reaper=core.reaper,
        )
    finally:
        core.waiter.close()


def legacy_key(settings: Settings, miner_id: str) -> str:
    """Register ``miner_id`` as a legacy miner (``POST /register_miner``); its key."""
    response = requests.post(
        f"{settings.api_url}/register_miner",
        json={"miner_id": miner_id},
        headers={"Authorization": f"Bearer {settings.registration_token}"},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["key"])
