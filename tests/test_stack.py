"""``make run``'s stack as a new user gets it: embedded Redis, web, one miner, Ctrl-C;
a miner that dies is restarted; runs on other databases share the data directory."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from scripts.launch import free_port
from scripts.processes import spawn, stop, wait_for
from tests.commands import stack_env
from tests.conftest import ROOT
from tests.mqtt_client import PLAIN, healthz

pytestmark = pytest.mark.slow


def test_stack_starts_answers_and_ctrl_c_leaves_nothing_running(tmp_path):
    web_port, redis_port = free_port(), free_port()
    env = stack_env(tmp_path, web_port, redis_port)
    log = tmp_path / "stack.log"
    stack = spawn([sys.executable, "-m", "scripts.stack"], env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: "MIA is up" in log.read_text() or stack.poll() is not None, 120, "up")
        assert stack.poll() is None, log.read_text()
        assert f"starting one on 127.0.0.1:{redis_port}" in log.read_text()
        children = psutil.Process(stack.pid).children(recursive=True)
        assert len(children) >= 3  # redis-server, gunicorn (+ workers), celery

        base = f"http://127.0.0.1:{web_port}"
        answer = requests.post(f"{base}/chat/direct", json={"message": "Hello"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == "echo: Hello"
        assert answer.json()["miner_id"] == "0"
        # gunicorn's two workers add up their counters (PROMETHEUS_MULTIPROC_DIR)
        for i in range(5):
            requests.post(f"{base}/chat/direct", json={"message": f"m{i}"}, timeout=30)
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        assert 'mia_jobs_total{outcome="done"} 6.0' in metrics
        assert "mia_live_miners 1.0" in metrics

        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0, log.read_text()
        survivors = [p for p in children if p.is_running() and p.status() != "zombie"]
        assert survivors == []
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/healthz", timeout=2)
    finally:
        if stack.poll() is None:
            stop(stack)


def test_with_mqtt_the_stack_is_up_once_the_gateway_is_subscribed_and_restarts_it(
    tmp_path, processes
):
    broker, _ = processes.mosquitto(PLAIN)
    health = free_port()
    env = stack_env(tmp_path, free_port(), free_port(), MIA_MQTT_URL=broker)
    env["MIA_MQTT_HEALTH_PORT"] = str(health)
    log = tmp_path / "stack.log"
    stack = spawn([sys.executable, "-m", "scripts.stack"], env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: "MIA is up" in log.read_text() or stack.poll() is not None, 120, "up")
        assert stack.poll() is None, log.read_text()
        status, body = healthz(health)  # already, not eventually
        assert (status, body["broker"], body["subscribed"]) == (200, "connected", True)
        assert "subscribed" in log.read_text().split("MIA is up")[0]

        # supervised: a gateway that dies is restarted and subscribes again
        [gateway] = [p for p in psutil.Process(stack.pid).children() if "web.mqtt" in p.cmdline()]
        gateway.kill()
        wait_for(lambda: "the MQTT gateway restarted" in log.read_text(), 20, "a restart")
        assert "the MQTT gateway exited with signal SIGKILL" in log.read_text()
        wait_for(lambda: healthz(health)[0] == 200, 30, "the new gateway to subscribe")
        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0, log.read_text()
    finally:
        if stack.poll() is None:
            stop(stack)


def started(env: dict[str, str], log: Path, within_s: float = 120) -> subprocess.Popen[bytes]:
    """``python -m scripts.stack`` once it says it is up (AssertionError if it exits)."""
    stack = spawn([sys.executable, "-m", "scripts.stack"], env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: "MIA is up" in log.read_text() or stack.poll() is not None, within_s, "up")
    except BaseException:
        stop(stack)
        raise
    assert stack.poll() is None, log.read_text()
    return stack


def echoed(base: str, message: str) -> dict[str, Any] | None:
    """/chat/direct's answer, or None while it does not answer 200."""
    try:
        answer = requests.post(f"{base}/chat/direct", json={"message": message}, timeout=10)
    except requests.RequestException:
        return None
    return dict(answer.json()) if answer.status_code == 200 else None


def test_a_killed_miner_is_restarted_while_the_web_tier_serves(tmp_path):
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    log = tmp_path / "stack.log"
    stack = started(stack_env(tmp_path, web_port, free_port()), log)
    try:
        first = psutil.Process(stack.pid).children(recursive=True)
        [miner] = [p for p in psutil.Process(stack.pid).children() if "celery" in p.cmdline()]
        miner.kill()
        served: list[int] = []

        def restarted() -> bool:
            served.append(requests.get(f"{base}/healthz", timeout=5).status_code)
            return "miner gpu-0 restarted" in log.read_text()

        wait_for(restarted, 20, "the miner's restart", interval=0.2)
        assert "miner gpu-0 exited with signal SIGKILL; restarting it in 1 s" in log.read_text()
        assert served and set(served) == {200}  # the web tier answered throughout
        answer = wait_for(lambda: echoed(base, "again"), 40, "an answer", interval=0.2)
        assert (answer["response"], answer["miner_id"]) == ("echo: again", "0")
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200

        everything = first + psutil.Process(stack.pid).children(recursive=True)
        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0, log.read_text()
        survivors = [p for p in everything if p.is_running() and p.status() != "zombie"]
        assert survivors == []
    finally:
        if stack.poll() is None:
            stop(stack)


def test_runs_on_other_databases_with_one_data_dir_each_come_up_at_once(tmp_path):
    """Run 2 (database b) rewrites var/miner-0.key; run 3 (database a again) finds a key
    its database does not know and renews it with the admin token."""
    redis_port = free_port()
    for run, db in enumerate("aba"):
        web_port = free_port()
        env = stack_env(tmp_path, web_port, redis_port)
        env["MIA_DATABASE_URL"] = f"sqlite:///{tmp_path / db}.db"
        log = tmp_path / f"stack-{run}.log"
        stack = started(env, log, within_s=45)  # not the miner's 180 s of refused keys
        try:
            answer = echoed(f"http://127.0.0.1:{web_port}", f"run {run}")
            assert answer is not None and answer["miner_id"] == "0", log.read_text()
            renewed = "renewed its key with the admin token" in log.read_text()
            assert renewed == (run == 2), log.read_text()
            assert "is not miner 0's current key" not in log.read_text()
            stack.send_signal(signal.SIGINT)
            assert stack.wait(60) == 0, log.read_text()
        finally:
            if stack.poll() is None:
                stop(stack)
    assert "holds another key" in log.read_text()
