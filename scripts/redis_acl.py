"""A Redis ACL user for one push miner, limited to what a miner does (Redis 7 or newer).

    python -m scripts.redis_acl 7 --password "$(openssl rand -hex 24)" | redis-cli -x ...

prints ``ACL SETUSER miner-7 ...`` (one line, ``redis-cli`` quoting). The miner then
connects with ``MIA_REDIS_URL=redis://miner-7:<password>@host:6379/0``.

What a miner touches, found in ``miners/runtime.py``, ``miners/listener.py``,
``tasks/broker/transport.py`` (kombu's Redis transport) and ``tasks/broker/backend.py``, and
checked by ``tests/test_redis_acl.py`` with a real miner answering through such a user:

- its own queue ``gpu-<id>`` (one list per priority step) and ``shared``, read and
  written; other miners' queues write-only (a failed job is retried on another miner);
- kombu's bookkeeping: ``unacked``, ``unacked_index``, ``unacked_mutex``,
  ``_kombu.binding*``; Celery's remote control and events (``*.celery.pidbox*``,
  ``celeryev.*`` and their channels);
- results ``celery-task-meta-*`` (key and channel);
- ``<p>:inflight``, ``<p>:held:<id>``, ``<p>:running:*``, ``<p>:abort:*``, ``<p>:partial:*``,
  ``{<p>}:breakers``, ``{<p>}:failstreak`` and, to retry a job elsewhere (``reserve.lua``),
  dispatch's own ``<p>:picks``, ``<p>:seq``, ``<p>:idx*``, ``<p>:indexed``,
  ``<p>:job:*``, ``<p>:beats``, ``<p>:drained`` (read and written: Redis 7 lets a script
  be given only keys the user may read and write, though the script only reads these
  two); read-only: ``<p>:hb:*``, ``<p>:drain:*``; channels ``<p>:stream:*``,
  ``<p>:abort``, ``<p>:events``, ``<p>:drains``;
- ``WAIT`` and ``ROLE`` (which replicas are online): a result store waits for a replica
  (``tasks.replication``, with Redis Sentinel).

Nothing else: no heartbeat keys (heartbeats go over HTTP with the miner's key), no
registration cache, no sessions, no other miner's queue to read, no admin commands.
What the write grant on ``<p>:beats`` allows a stolen miner password is in
docs/security.md.
"""

from __future__ import annotations

import argparse
import sys

from tasks.broker.layout import KOMBU_PRIORITY_SEP
from tasks.keys import SHARED_QUEUE, Keys, queue_for

COMMANDS = (
    "multi exec discard watch unwatch "
    "brpop lpush rpush llen lrange lrem del exists expire pexpire time "
    "get set mget incr decr "
    "hget hset hdel hgetall hmget hincrby hvals "
    "sadd srem smembers sismember scard "
    "zadd zrem zrange zrangebyscore zrevrangebyscore zcard "
    "publish subscribe unsubscribe psubscribe punsubscribe "
    "eval evalsha script|load script|exists "
    "wait role"  # a result confirmed by a replica (tasks.replication)
).split()


def key_patterns(miner_id: str, prefix: str = "mia") -> list[str]:
    keys = Keys(prefix)
    own, kombu = queue_for(miner_id), keys.broker_prefix  # kombu's keys: under its prefix
    return [
        f"~{kombu}{own}",
        f"~{kombu}{own}{KOMBU_PRIORITY_SEP}*",
        f"~{kombu}{SHARED_QUEUE}",
        f"~{kombu}{SHARED_QUEUE}{KOMBU_PRIORITY_SEP}*",
        f"%W~{kombu}{queue_for('*')}",
        f"~{keys.unacked}",
        f"~{keys.unacked_index}",
        f"~{kombu}unacked_mutex",
        f"~{kombu}_kombu.binding*",
        f"~{kombu}*.celery.pidbox*",
        f"~{kombu}celeryev.*",
        f"~{keys.result('*')}",
        f"~{keys.inflight}",
        f"~{keys.held(miner_id)}",
        f"~{keys.running('*')}",
        f"~{keys.abort('*')}",
        f"~{keys.partial('*')}",  # a job's answer so far (miners.resume)
        f"~{keys.breakers}",
        f"~{keys.failstreak}",
        f"~{keys.picks}",
        f"~{keys.seq}",
        f"~{keys.index}",
        f"~{keys.index}:*",
        f"~{keys.indexed}",
        f"~{keys.job('*')}",
        # read and written: Redis 7 lets a script be given (declare) only keys the user
        # may read and write, and reserve.lua declares these two
        f"~{keys.beats}",
        f"~{keys.drained}",
        f"%R~{keys.heartbeat('*')}",
        f"%R~{keys.drain('*')}",
    ]


def channel_patterns(prefix: str = "mia", db: int = 0) -> list[str]:
    """Channels; kombu's fanout channels carry the database number, and a PSUBSCRIBE
    pattern must be allowed as written (Redis compares patterns literally)."""
    keys = Keys(prefix)
    kombu = keys.broker_prefix  # kombu prefixes its channels too
    return [
        f"&{keys.reply('*')}",
        f"&{keys.stream('*')}",
        f"&{keys.aborts}",
        f"&{keys.events}",
        f"&{keys.drains}",
        f"&{keys.result('*')}",
        f"&{kombu}/{db}.celery.pidbox",
        f"&{kombu}/{db}.celeryev/*",
        f"&{kombu}/{db}.celeryev/worker.*",
    ]


def miner_rules(miner_id: str, password: str, prefix: str = "mia", db: int = 0) -> list[str]:
    """The arguments of ``ACL SETUSER miner-<id>`` after the user name."""
    commands = [f"+{c}" for c in COMMANDS]
    patterns = key_patterns(miner_id, prefix) + channel_patterns(prefix, db)
    # @connection (AUTH, HELLO, PING, SELECT, CLIENT SETNAME/SETINFO...) less its admin part
    connection = ["+@connection", "-@admin", "-@dangerous"]
    return ["reset", "on", f">{password}", "-@all", *connection, *commands, *patterns]


def quoted(word: str) -> str:
    """``word`` as redis-cli reads it (control characters as \\xHH in double quotes)."""
    if all(c.isprintable() and c not in ' "\\' for c in word):
        return word
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}" for c in word)
    return f'"{escaped}"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.redis_acl", description=__doc__)
    parser.add_argument("miner_id")
    parser.add_argument("--password", required=True)
    parser.add_argument("--prefix", default="mia", help="MIA_KEY_PREFIX")
    parser.add_argument("--db", type=int, default=0, help="the database in MIA_REDIS_URL")
    args = parser.parse_args(argv)
    words = ["ACL", "SETUSER", f"miner-{args.miner_id}"]
    words += miner_rules(args.miner_id, args.password, args.prefix, args.db)
    print(" ".join(quoted(w) for w in words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
