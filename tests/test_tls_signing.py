"""Redis over TLS (``rediss://``) and signed Celery messages (``MIA_MESSAGE_SIGNING=1``).

The configuration is checked as data; then for real: a redis-server that speaks only
TLS and asks for client certificates (skipped where no redis-server with TLS is
installed), and ``make run``'s stack on it with message signing on, answering a chat
and refusing an unsigned task message.
"""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
import requests

import celeryconfig
from scripts import redis_server
from scripts.launch import free_port
from scripts.processes import spawn, stop, wait_for
from tasks.celery_app import create_celery
from tasks.connections import redis_client, redis_options
from tasks.errors import ConfigError
from tasks.jobs import GENERATE, Job
from tasks.keys import Keys
from tasks.settings import Settings
from tests.certs import Pair, issue
from tests.commands import stack_env
from tests.conftest import ROOT

KEYS = Keys("mia")

FILES = {"ca": "/etc/mia/ca.pem", "cert": "/etc/mia/client.pem", "key": "/etc/mia/client.key"}


def tls_settings(url: str = "rediss://redis.example:6380/0", **changes: str) -> Settings:
    return Settings(
        redis_url=url,
        redis_tls_ca_file=FILES["ca"],
        redis_tls_cert_file=FILES["cert"],
        redis_tls_key_file=FILES["key"],
    ).with_overrides(**changes)


def test_a_rediss_url_gives_celery_and_redis_py_the_tls_settings():
    conf = celeryconfig.from_settings(tls_settings())
    expected = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": FILES["ca"],
        "ssl_certfile": FILES["cert"],
        "ssl_keyfile": FILES["key"],
    }
    assert conf["broker_use_ssl"] == expected
    assert conf["redis_backend_use_ssl"] == expected
    assert redis_options(tls_settings()) == expected
    loose = tls_settings(redis_tls_cert_reqs="none", redis_tls_cert_file="", redis_tls_key_file="")
    assert celeryconfig.from_settings(loose)["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_NONE,
        "ssl_ca_certs": FILES["ca"],
    }


def test_a_redis_url_has_no_tls_and_a_bad_cert_reqs_is_a_config_error():
    plain = tls_settings("redis://redis.example:6379/0")
    conf = celeryconfig.from_settings(plain)
    assert "broker_use_ssl" not in conf and "redis_backend_use_ssl" not in conf
    assert redis_options(plain) == {}
    with pytest.raises(ConfigError, match="MIA_REDIS_TLS_CERT_REQS"):
        celeryconfig.from_settings(tls_settings(redis_tls_cert_reqs="sometimes"))


def test_signing_switches_task_messages_to_the_auth_serializer():
    signing = Settings(
        message_signing=1,
        signing_key_file="/k.pem",
        signing_cert_file="/c.pem",
        signing_cert_store="/certs",
    )
    conf = celeryconfig.from_settings(signing)
    assert (conf["task_serializer"], conf["accept_content"]) == ("auth", ["auth"])
    assert conf["result_accept_content"] == ["json"]  # results stay JSON
    assert conf["security_key"] == "/k.pem" and conf["security_cert_store"] == "/certs"
    assert conf["security_digest"] == "sha256"
    off = celeryconfig.from_settings(Settings())
    assert off["task_serializer"] == "json" and "security_key" not in off
    with pytest.raises(ConfigError, match="MIA_SIGNING_CERT_STORE"):
        celeryconfig.from_settings(signing.with_overrides(signing_cert_store=""))


# -- for real ----------------------------------------------------------------------------


def tls_redis(folder: Path, ca: Pair, server: Pair) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server listening only on TLS, asking for client certificates."""
    candidates = [shutil.which("redis-server"), redis_server.server_binary()]
    for binary in dict.fromkeys(c for c in candidates if c):
        port = free_port()
        argv = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
        argv += ["--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key)]
        argv += ["--tls-ca-cert-file", str(ca.cert), "--tls-auth-clients", "yes"]
        argv += ["--save", "", "--dir", str(folder)]
        proc = spawn(argv, log=folder / "redis.log")
        time.sleep(0.3)
        if proc.poll() is None:
            return proc, port
    pytest.skip("no redis-server built with TLS here")


@pytest.fixture
def tls(tmp_path):
    """(settings for a TLS Redis with a client certificate, the certificates' folder)."""
    certs = tmp_path / "certs"
    ca = issue(certs, "mia-test-ca", is_ca=True)
    server = issue(certs, "redis", ca=ca, ip="127.0.0.1")
    client = issue(certs, "miner", ca=ca)
    proc, port = tls_redis(tmp_path, ca, server)
    settings = Settings(
        redis_url=f"rediss://127.0.0.1:{port}/0",
        redis_tls_ca_file=str(ca.cert),
        redis_tls_cert_file=str(client.cert),
        redis_tls_key_file=str(client.key),
    )
    try:
        options = redis_options(settings)
        wait_for(lambda: redis_server.answers(settings.redis_url, **options), 10, "TLS Redis")
        yield settings, certs
    finally:
        stop(proc)


def test_clients_celery_and_the_result_store_speak_tls(tls):
    settings, _ = tls
    client = redis_client(settings)
    assert client.ping()
    no_cert = redis_client(settings.with_overrides(redis_tls_cert_file="", redis_tls_key_file=""))
    with pytest.raises(redis_lib.ConnectionError):
        no_cert.ping()
    app = create_celery("tls-test", settings)
    app.send_task(GENERATE, args=[Job(messages=[]).to_payload()], queue="tls-q", retry=False)
    assert client.llen(KEYS.queue_list("tls-q", 0)) == 1
    app.backend.store_result("tls-job", {"response": "hi"}, "SUCCESS")
    assert app.backend.get_task_meta("tls-job")["result"] == {"response": "hi"}


@pytest.mark.slow
def test_the_stack_over_tls_with_signed_messages_refuses_an_unsigned_one(tls, tmp_path):
    settings, certs = tls
    signer = issue(certs, "mia-signer")
    store = certs / "trusted"
    store.mkdir()
    shutil.copy(signer.cert, store / "mia-signer.pem")
    web_port = free_port()
    env = stack_env(
        tmp_path,
        web_port,
        free_port(),
        MIA_REDIS_URL=settings.redis_url,
        MIA_REDIS_TLS_CA_FILE=settings.redis_tls_ca_file,
        MIA_REDIS_TLS_CERT_FILE=settings.redis_tls_cert_file,
        MIA_REDIS_TLS_KEY_FILE=settings.redis_tls_key_file,
        MIA_MESSAGE_SIGNING="1",
        MIA_SIGNING_KEY_FILE=str(signer.key),
        MIA_SIGNING_CERT_FILE=str(signer.cert),
        MIA_SIGNING_CERT_STORE=str(store),
        MIA_WEB_WORKERS="1",
    )
    log = tmp_path / "stack.log"
    stack = spawn([sys.executable, "-m", "scripts.stack"], env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: "MIA is up" in log.read_text() or stack.poll() is not None, 120, "up")
        assert stack.poll() is None, log.read_text()
        assert f"Using Redis at {settings.redis_url}" in log.read_text()
        base = f"http://127.0.0.1:{web_port}"
        answer = requests.post(f"{base}/chat/direct", json={"message": "Hello"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == "echo: Hello"
        # make run made an admin token for the operator (owner-only) and said where
        token_file = tmp_path / "admin-token"
        assert str(token_file) in log.read_text()
        assert token_file.stat().st_mode & 0o777 == 0o600
        admin = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        load = {"json": {"model_id": "echo"}, "timeout": 10}
        assert requests.post(f"{base}/api/v2/models/load", **load).status_code == 401
        assert requests.post(f"{base}/api/v2/models/load", headers=admin, **load).status_code == 200

        unsigned = create_celery("intruder", settings)  # TLS, but no signing key
        job = Job(messages=[{"role": "user", "content": "forged"}], job_id=uuid.uuid4().hex)
        unsigned.send_task(GENERATE, args=[job.to_payload()], queue="gpu-0", task_id=job.job_id)
        wait_for(lambda: "untrusted content" in log.read_text(), 15, "the miner to refuse it")
        assert not redis_client(settings).exists(KEYS.result(job.job_id))
        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0, log.read_text()
    finally:
        if stack.poll() is None:
            stop(stack)
