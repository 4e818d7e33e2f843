"""``make run``'s stack as a new user gets it: embedded Redis, web, one miner, Ctrl-C."""

from __future__ import annotations

import signal
import sys

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


def test_with_mqtt_the_stack_is_up_only_once_the_gateway_is_subscribed(tmp_path, processes):
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
        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0, log.read_text()
    finally:
        if stack.poll() is None:
            stop(stack)
