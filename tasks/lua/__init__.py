"""Lua scripts, loaded once per client from ``tasks/lua/*.lua`` and called by name.

The scripts that keep or read the dispatch index share its functions: ``index.lua``
is put in front of each of them (Redis scripts cannot load one another)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
import redis.client
from redis.cluster import RedisCluster
from redis.commands.core import Script

NAMES = (
    "reserve",
    "release",
    "store_result",
    "lease",
    "expire",
    "submit",
    "sessions_lru",
    "beat",
    "reap",
    "breaker",
    "recover",
    "settle",
    "rate_limit",
    "claim",
    "append",
)


INDEXED = frozenset({"reserve", "release", "beat", "reap"})


def source(name: str) -> str:
    lua = resources.files("tasks.lua")
    text = lua.joinpath(f"{name}.lua").read_text()
    if name in INDEXED:
        return lua.joinpath("index.lua").read_text() + "\n" + text
    return text


class Scripts:
    """The project's scripts registered on one Redis client (EVALSHA, reloaded if flushed)."""

    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self._scripts: dict[str, Script] = {n: client.register_script(source(n)) for n in NAMES}

    def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def queue(
        self, pipe: redis.client.Pipeline, name: str, keys: list[str], args: list[Any]
    ) -> None:
        """Queue script ``name`` on ``pipe`` by its hash alone. (redis-py's own way asks
        Redis whether the script exists first: one more round trip per execute.) The
        pipeline raises NoScriptError if Redis lost its scripts: call it once the
        usual way, which loads it again."""
        pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
