"""A push miner behind its own Redis ACL user (``scripts.redis_acl``) answers jobs.

A redis-server of the test's own (Redis 7 or newer: read-only and write-only key
patterns) with the user ``miner-acl7`` made by ``scripts.redis_acl``; a web tier in
this process on the default user; a real miner worker (mingle, gossip, events and
remote control on, as ``make run`` starts it) connecting as ``miner-acl7``. It answers
pushed, streamed and queued jobs and Redis logs no refused command, key or channel.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest
import redis as redis_lib
import requests
from werkzeug.serving import make_server

from scripts import redis_acl, redis_server
from scripts.launch import free_port, miner_argv
from scripts.processes import spawn, stop, wait_for
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from tasks.settings import Settings
from tests.conftest import ROOT
from tests.miner_processes import miner_env
from web import create_app
from web.fleet.registry import Heartbeat, Registry

MINER = "acl7"
PASSWORD = "miner-secret-7"


def redis_7() -> str:
    for binary in (shutil.which("redis-server"), redis_server.server_binary()):
        if binary:
            found = re.search(
                r"v=(\d+)\.", subprocess.check_output([binary, "--version"], text=True)
            )
            if found and int(found.group(1)) >= 7:
                return binary
    pytest.skip("no redis-server 7 or newer (ACL key permissions need it)")


@pytest.fixture
def acl_redis(tmp_path) -> Iterator[tuple[str, redis_lib.Redis]]:
    port = free_port()
    argv = [redis_7(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = spawn([*argv, "--dir", str(tmp_path)], log=tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis_server.answers(url), 10, "redis-server")
        admin = redis_lib.Redis.from_url(url)
        admin.execute_command(
            "ACL", "SETUSER", f"miner-{MINER}", *redis_acl.miner_rules(MINER, PASSWORD)
        )
        yield url, admin
        admin.close()
    finally:
        stop(proc)


@pytest.fixture
def web(acl_redis, settings: Settings) -> Iterator[Settings]:
    url, _ = acl_redis
    port = free_port()
    ours = settings.with_overrides(redis_url=url, port=port, api_url=f"http://127.0.0.1:{port}")
    app = create_app(ours)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ours
    finally:
        server.shutdown()
        thread.join(5)
        app.extensions["mia"].housekeeper.close()  # its Redis goes away with the test
        app.extensions["mia"].waiter.close()


def refused(admin: redis_lib.Redis) -> list[tuple[str, str]]:
    """What Redis refused the miner: (what, its name) from ``ACL LOG``."""
    entries = admin.execute_command("ACL", "LOG")
    return [(str(entry[b"reason"]), str(entry[b"object"])) for entry in entries]


def live(settings: Settings) -> set[str]:
    found = requests.get(f"{settings.api_url}/metrics/gpus", timeout=5).json()["miners"]
    return {m["miner_id"] for m in found if m["status"] != "offline"}


def test_a_miner_with_its_own_acl_user_answers_and_is_refused_nothing(acl_redis, web, tmp_path):
    url, admin = acl_redis
    miner_url = url.replace("redis://", f"redis://miner-{MINER}:{PASSWORD}@")
    env = miner_env(web, "echo", 2, MIA_REDIS_URL=miner_url)
    log = tmp_path / "miner.log"
    proc = spawn(miner_argv(MINER, loglevel="info"), env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: MINER in live(web) or proc.poll() is not None, 90, "the miner")
        assert proc.poll() is None, refused(admin)
        base = web.api_url
        answer = requests.post(f"{base}/chat/direct", json={"message": "hi"}, timeout=20).json()
        assert (answer["response"], answer["miner_id"]) == ("echo: hi", MINER)
        streamed = requests.post(
            f"{base}/chat/direct", json={"message": "a b c", "stream": True}, timeout=20
        )
        assert "event: done" in streamed.text and "echo" in streamed.text
        queued = requests.post(f"{base}/chat", json={"message": "from shared"}, timeout=5).json()
        wait_for(
            lambda: (
                requests.get(f"{base}/jobs/{queued['job_id']}", timeout=5).json()["status"]
                == "done"
            ),
            20,
            "the queued job",
        )
        stop(proc)
        assert refused(admin) == []
        assert "NOPERM" not in log.read_text()
    finally:
        stop(proc)


def test_the_security_page_shows_the_rule_the_script_prints():
    page = (ROOT / "docs" / "security.md").read_text()
    block = page[page.index("ACL SETUSER miner-7 reset") :]
    block = " ".join(block[: block.index("```")].split())
    printed = " ".join(
        redis_acl.quoted(w) for w in ["ACL", "SETUSER", "miner-7", *redis_acl.miner_rules("7", "p")]
    )
    assert block == printed


def test_the_acl_user_cannot_touch_what_is_not_its_own(acl_redis):
    url, admin = acl_redis
    client = redis_lib.Redis.from_url(url.replace("redis://", f"redis://miner-{MINER}:{PASSWORD}@"))
    other = Keys("mia").queue_list("gpu-other", 0)
    admin.lpush(other, "a job")
    for forbidden in (
        lambda: client.rpop(other),  # another miner's queue: write-only
        lambda: client.set("{mia}:hb:other", "{}"),  # heartbeats go over HTTP
        lambda: client.get("{mia}:minerkey:other"),  # the key cache
        lambda: client.get(Keys("mia").session("restaurant", "s1")),
        lambda: client.flushdb(),
        lambda: client.keys("*"),
        lambda: client.config_get("*"),
    ):
        with pytest.raises(redis_lib.exceptions.NoPermissionError):
            forbidden()
    assert client.lpush(other, "a retry") == 2  # a retry elsewhere may push
    assert client.get("{mia}:hb:other") is None  # read-only
    # A result's store waits for a replica (tasks.replication): WAIT, and ROLE to count them.
    assert client.execute_command("ROLE")[0] == b"master"
    assert client.execute_command("WAIT", 0, 0) == 0
    client.close()


def test_a_retry_elsewhere_goes_through_the_miners_user(acl_redis):
    """A job that failed on this miner is reserved on another (``miners.retry``:
    ``reserve.lua`` with this one excluded, which declares every key it touches) and the
    slot given back, through the miner's own user, with nothing refused."""
    url, admin = acl_redis
    keys = Keys("mia")
    registry = Registry(admin, keys, ttl_s=30)
    for miner_id in (MINER, "other"):
        registry.beat(Heartbeat(miner_id, "available", 2, 2, ["echo"], "echo"))
    client = redis_lib.Redis.from_url(url.replace("redis://", f"redis://miner-{MINER}:{PASSWORD}@"))
    try:
        selector = RedisSelector(client, Scripts(client), keys, 60)
        job = Job([{"role": "user", "content": "again"}], model="echo")
        assert selector.choose(job, exclude=MINER) == "other"
        assert admin.hget(keys.inflight, "other") == b"1"
        selector.release("other")
    finally:
        client.close()
    assert admin.hget(keys.inflight, "other") == b"0"
    assert refused(admin) == []
