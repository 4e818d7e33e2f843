"""Redis goes away and comes back: 503 fast, /readyz red, then recovery by itself."""

from __future__ import annotations

import time

import pytest

from scripts import redis_server
from scripts.processes import stop, wait_for
from tasks.settings import Settings
from tests.conftest import TOKEN, free_port
from web import create_app


@pytest.fixture
def own_redis(tmp_path):
    port = free_port()
    procs = [redis_server.start(port, tmp_path / "redis")]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"

        def down(self) -> None:
            stop(procs[-1])

        def up(self) -> None:
            procs.append(redis_server.start(port, tmp_path / "redis"))

    yield Server()
    for proc in procs:
        stop(proc)


def test_redis_down_answers_503_fast_and_recovers(own_redis, database_url):
    settings = Settings(
        redis_url=own_redis.url,
        database_url=database_url,
        registration_token=TOKEN,
        redis_timeout_s=0.5,
        request_timeout_s=0.3,
    )
    client = create_app(settings).test_client()
    assert client.post("/chat/direct", json={"message": "before"}).status_code == 504

    own_redis.down()
    started = time.monotonic()
    response = client.post("/chat/direct", json={"message": "during"})
    assert response.status_code == 503
    assert "Redis" in response.json["error"]
    assert time.monotonic() - started < 5  # a short connect timeout, not a hang
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics/gpus").status_code == 503

    own_redis.up()
    wait_for(lambda: client.get("/readyz").status_code == 200, 10, "readyz to turn green")
    # The whole dispatch path (reserve, publish, result channel) works again: with no
    # miner the job waits on `shared` and the short request timeout answers 504.
    wait_for(
        lambda: client.post("/chat/direct", json={"message": "after"}).status_code == 504,
        10,
        "dispatch to recover",
    )
