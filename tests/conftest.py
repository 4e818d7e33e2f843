"""Shared fixtures: a real Redis, a live web tier, and real miner worker processes.

Redis: ``MIA_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/15), flushed before
each test that asks for it; if nothing answers there, a redis-server of our own
on a free port for the whole session.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from werkzeug.serving import BaseWSGIServer, make_server

from scripts import redis_server
from scripts.launch import free_port, legacy_argv, logged, miner_argv
from scripts.processes import stop
from tasks.keys import Keys
from tasks.settings import Settings
from tests.miner_processes import MinerProcess, launch, live_miner_ids, miner_env
from tests.mqtt_client import Processes, project_file
from web import create_app
from web.fleet.db import migrate

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get(
    "MIA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TOKEN = "test-registration-token"
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def expire_heartbeat(redis: redis_lib.Redis, keys: Keys, miner_id: str) -> None:
    """A miner's heartbeat TTL ran out, without waiting for it: its key is gone, and
    dispatch's copy (``<p>:beats``, which ``reserve.lua`` reads) is past its deadline."""
    redis.delete(keys.heartbeat(miner_id))
    raw = redis.hget(keys.beats, miner_id)
    if raw is not None:
        redis.hset(keys.beats, miner_id, b"0|" + raw.split(b"|", 1)[1])


pytest_plugins = ["tests.browser", "tests.celery_fixtures"]  # browser, celery_app


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("MIA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if redis_server.answers(url):
        yield url
        return
    port = free_port()
    proc = redis_server.start(port, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'mia.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def web_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def settings(
    redis_url: str, database_url: str, web_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        port=web_port,
        api_url=f"http://127.0.0.1:{web_port}",
        registration_token=TOKEN,
        admin_token=ADMIN_TOKEN,
        request_timeout_s=15.0,
        # the session's miners keep their keys here, as the database keeps their ids
        data_dir=str(tmp_path_factory.mktemp("var")),
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    return create_app(settings)


@contextmanager
def serving(app: Flask, port: int = 0) -> Iterator[str]:
    """``app`` over real HTTP in a thread, at its base URL, until the block ends."""
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="session")
def live_server(app: Flask, settings: Settings) -> Iterator[str]:
    """The session's app served over real HTTP in a thread (miners heartbeat to it)."""
    with serving(app, settings.port):
        yield settings.api_url


@pytest.fixture
def catalogue_app(
    settings: Settings, tmp_path: Path
) -> Callable[[str], AbstractContextManager[tuple[str, Path]]]:
    """``with catalogue_app(toml) as (base, file)``: a second web tier on the session's
    Redis that knows the models of ``toml`` (miners given ``file`` know them too)."""

    @contextmanager
    def start(toml: str) -> Iterator[tuple[str, Path]]:
        file = tmp_path / f"catalogue-{uuid.uuid4().hex[:8]}.toml"
        file.write_text(toml)
        app = create_app(settings.with_overrides(catalogue_file=str(file)))
        try:
            with serving(app) as base:
                yield base, file
        finally:
            app.extensions["mia"].waiter.close()

    return start


@pytest.fixture
def redis(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def client(app: Flask, redis: redis_lib.Redis) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api(live_server: str, redis: redis_lib.Redis) -> Iterator[requests.Session]:
    """An HTTP session against the live server; ``api.base`` is its URL."""
    with requests.Session() as session:
        session.base = live_server  # type: ignore[attr-defined]
        yield session


@pytest.fixture
def miner(
    live_server: str, redis: redis_lib.Redis, settings: Settings, tmp_path: Path
) -> Iterator[Callable[..., MinerProcess]]:
    """Start a real miner worker: ``miner("0", engine="echo", slots=2, **env)``.

    ``python`` runs it from another environment (the vLLM one, ``make test-vllm``).
    """
    started: list[MinerProcess] = []

    def start(
        gpu_id: str = "0",
        engine: str = "echo",
        slots: int = 2,
        wrapper: bool = False,
        python: str = sys.executable,
        ready_s: float = 120,
        **env: str,
    ) -> MinerProcess:
        argv = miner_argv(gpu_id, python, alone=True, loglevel="info")
        if wrapper:
            argv = [sys.executable, "-m", "miners", "--gpu-id", gpu_id]
        env = miner_env(settings, engine, slots, **env)
        return launch(
            started,
            gpu_id,
            argv,
            env,
            tmp_path / f"miner-{gpu_id}.log",
            lambda: gpu_id in live_miner_ids(settings),
            ready_s,
            f"miner {gpu_id} to heartbeat",
        )

    yield start
    for found in started:
        stop(found.proc)


@pytest.fixture
def legacy_miner(
    live_server: str, redis: redis_lib.Redis, settings: Settings, tmp_path: Path
) -> Iterator[Callable[..., MinerProcess]]:
    """Start a real ``python -m miners.legacy``: ``legacy_miner("old-1", poll_s=0.1)``
    (``""``: no ``--miner-id``, so the id it kept, or a new one)."""
    started: list[MinerProcess] = []

    def start(
        miner_id: str = "old-1",
        engine: str = "echo",
        poll_s: float = 2.0,
        wait_s: float = 0.0,
        **env: str,
    ) -> MinerProcess:
        log = tmp_path / f"legacy-{miner_id or 'auto'}-{len(started)}.log"
        return launch(
            started,
            miner_id,
            legacy_argv(miner_id, poll_s, wait_s),
            miner_env(settings, engine, 1, **env),
            log,
            partial(logged, log, "polling"),
            60,
            f"legacy miner {miner_id} to poll",
        )

    yield start
    for found in started:
        stop(found.proc)


def postgres_answers() -> bool:
    try:
        engine = create_engine(POSTGRES, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A throwaway schema in the test PostgreSQL: (URL that uses it, schema name)."""
    if not postgres_answers():
        pytest.skip("no PostgreSQL at MIA_TEST_POSTGRES_URL")
    schema = f"mia_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}", schema
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Mosquitto brokers and MQTT gateways a test starts, all stopped at its end."""
    found = Processes(tmp_path)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def project(tmp_path: Path) -> str:
    """An MQTT test's project of its own (the restaurant's config), so topics never collide."""
    return project_file(tmp_path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A three-master Redis Cluster of the test module's own (tests/redis_cluster.py)."""
    from tests.redis_cluster import ClusterGroup  # it imports this module's helpers

    with ClusterGroup(Path(tmp_path_factory.mktemp("cluster"))) as group:
        yield group
