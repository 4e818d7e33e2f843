"""Run one of the project's Lua scripts so that Redis itself refuses any key the call
did not declare: the call runs as a Redis ACL user allowed exactly the keys in its
KEYS (any command, any channel). A key built inside the script, or read from data,
fails the call with NOPERM, whatever slot it would hash to; that is the rule a Redis
Cluster (and managed Redis) holds scripts to, checked on one server. The keys declared
must also share one slot (a cluster refuses a script whose keys span slots)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis as redis_lib
from redis.crc import key_slot

from tasks.lua import source

GLOB_SPECIALS = "\\*?[]"


def exact(key: str) -> str:
    """An ACL key pattern that matches ``key`` and nothing else."""
    return "".join("\\" + c if c in GLOB_SPECIALS else c for c in key)


@contextmanager
def declared_only(admin: redis_lib.Redis) -> Iterator[Any]:
    """A function ``run(name, keys, args)`` that runs script ``name`` as a user of
    its own allowed only ``keys``; the user is removed on leaving the block."""
    user = f"mia-declared-{secrets.token_hex(4)}"
    kwargs = admin.connection_pool.connection_kwargs
    client = redis_lib.Redis(
        host=kwargs.get("host", "127.0.0.1"),
        port=kwargs.get("port", 6379),
        db=kwargs.get("db", 0),
        username=user,
        password="unused",  # nopass: any password is right
    )

    def run(name: str, keys: list[str], args: list[Any], lua: str = "") -> Any:
        """Script ``name`` (or the Lua ``lua``, when given) on ``keys`` and ``args``."""
        slots = {key_slot(k.encode()) for k in keys}
        assert len(slots) <= 1, f"{name or 'the script'} declares keys in slots {slots}: {keys}"
        patterns = [f"~{exact(k)}" for k in keys] or ["resetkeys"]
        admin.execute_command(
            "ACL", "SETUSER", user, "reset", "on", "nopass", "+@all", "&*", *patterns
        )
        client.connection_pool.disconnect()  # connect (and AUTH) as the user as it is now
        return client.eval(lua or source(name), len(keys), *keys, *args)

    try:
        yield run
    finally:
        client.close()
        admin.execute_command("ACL", "DELUSER", user)
