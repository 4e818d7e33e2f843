"""A master demoted while it stays up (a manual ``SENTINEL FAILOVER``, a partition): a
write it took alone is refused, and subscribers (the result listener, a miner's abort
listener) move to the new master. A master killed under load:
tests/test_sentinel_failover.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from scripts.processes import wait_for
from tasks.connections import redis_client
from tasks.keys import Keys
from tasks.replication import Replicas
from tasks.sentinel import ensure_on_master
from tasks.settings import Settings
from tests.sentinel_group import SentinelGroup
from web.fleet.results import ResultWaiter

pytestmark = pytest.mark.sentinel


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with closing(SentinelGroup(tmp_path / "sentinel")) as found:
        yield found


def test_a_write_alone_on_a_master_the_sentinels_left_is_refused(group, tmp_path):
    """A manual failover (or a partition) leaves the old master up, and a master, for
    seconds after the sentinels promoted its replica; a pooled connection still writes
    there, and it has no replica left to wait for. Such a write is refused (it is lost
    when the old master rejoins as a replica); the next one goes to the new master."""
    settings = Settings(
        redis_url=group.url(), redis_sentinel_master=group.name, redis_wait_timeout_ms=200
    )
    client = redis_client(settings)
    replicas = Replicas.from_settings(client, settings)
    assert write(client, replicas) == (True, group.master_port)  # confirmed by the replica
    old_master = redis_lib.Redis(port=group.master_port)
    redis_lib.Redis(port=next(iter(group.sentinels))).sentinel_failover(group.name)
    wait_for(lambda: group.master_port_now() == group.replica_port, 30, "the promotion")
    assert old_master.execute_command("ROLE")[0] == b"master"  # not told yet
    assert write(client, replicas) == (False, group.master_port)  # the pooled connection
    assert write(client, replicas) == (True, group.replica_port)  # the new master, alone
    client.close()


def write(client: redis_lib.Redis, replicas: Replicas) -> tuple[bool, int]:
    pipe = client.pipeline(transaction=False)
    pipe.set("mia:probe", 1)
    pending = replicas.queue(pipe)
    pending.take(pipe.execute(raise_on_error=False))
    assert pending.address is not None
    return replicas.confirmed(pending), pending.address[1]


def test_the_result_listener_follows_a_master_demoted_while_it_stays_up(group):
    """A manual failover leaves the old master up, its subscribers connected; the web
    tier's result listener asks the sentinels where the master is and subscribes again
    there, so a result published on the new master still reaches its caller."""
    settings = Settings(redis_url=group.url(), redis_sentinel_master=group.name)
    client = redis_client(settings)
    waiter = ResultWaiter(client, Keys("mia"), ready_timeout_s=5)
    channel = waiter.expect("before").channel
    redis_lib.Redis(port=next(iter(group.sentinels))).sentinel_failover(group.name)
    wait_for(lambda: group.master_port_now() == group.replica_port, 30, "the promotion")
    new_master = redis_lib.Redis(port=group.replica_port)
    meta = json.dumps({"task_id": "after", "status": "SUCCESS", "result": {"ok": True}})

    def delivered() -> dict[str, Any] | None:
        waiter.expect("after")
        new_master.publish(channel, meta)  # until the listener hears it there
        return waiter.wait("after", 0.5)

    # within a few of the listener's checks (MASTER_CHECK_S), not when the old master
    # drops its clients on becoming a replica (about 10 s later here)
    started = time.monotonic()
    assert wait_for(delivered, 6, "the result on the new master")["result"] == {"ok": True}
    print(f"\nresult listener back on the new master {time.monotonic() - started:.2f} s after")
    waiter.close()
    client.close()


def test_a_subscriber_on_a_demoted_master_is_told_to_subscribe_again(group):
    """What the result listener and a miner's abort listener check every MASTER_CHECK_S."""
    settings = Settings(redis_url=group.url(), redis_sentinel_master=group.name)
    client = redis_client(settings)
    pubsub = client.pubsub()
    pubsub.subscribe("mia:abort")
    pubsub.get_message(timeout=1)
    ensure_on_master(client, pubsub)  # on the master: nothing to do
    redis_lib.Redis(port=next(iter(group.sentinels))).sentinel_failover(group.name)
    wait_for(lambda: group.master_port_now() == group.replica_port, 30, "the promotion")
    with pytest.raises(redis_lib.ConnectionError, match="no longer the master"):
        ensure_on_master(client, pubsub)
    pubsub.close()
    again = client.pubsub()  # a new subscription reaches the new master
    again.subscribe("mia:abort")
    again.get_message(timeout=1)
    ensure_on_master(client, again)
    assert again.connection is not None and again.connection.port == group.replica_port
    again.close()
    client.close()
    plain = redis_lib.Redis(port=group.replica_port).pubsub()
    plain.subscribe("x")
    ensure_on_master(redis_lib.Redis(port=group.replica_port), plain)  # no Sentinel: no-op
    plain.close()
