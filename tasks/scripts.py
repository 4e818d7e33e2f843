"""Lua scripts, loaded once per client from ``tasks/lua/*.lua`` and called by name."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

NAMES = (
    "reserve",
    "release",
    "store_result",
    "lease",
    "expire",
    "submit",
    "session_save",
    "beat",
    "reap",
    "breaker",
    "recover",
)


def source(name: str) -> str:
    return resources.files("tasks").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """The project's scripts registered on one Redis client (EVALSHA, reloaded if flushed)."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts: dict[str, Script] = {n: client.register_script(source(n)) for n in NAMES}

    def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)
