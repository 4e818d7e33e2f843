"""docker-compose.yml: the whole stack, each command one this suite also runs natively.

No Docker engine runs on these machines, so the file is checked for structure (and
with ``docker compose config`` where that command exists).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest
import yaml

from scripts.launch import web_argv
from tasks.settings import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def command(service: dict) -> list[str]:
    raw = service["command"]
    return raw if isinstance(raw, list) else shlex.split(raw)


def test_the_stack_has_every_part():
    found = services()
    assert {
        "redis",
        "postgres",
        "web",
        "miner-0",
        "miner-1",
        "flower",
        "prometheus",
        "mosquitto",
        "mqtt-gateway",
    } <= set(found)
    assert "--appendonly" in found["redis"]["command"]


def test_commands_are_the_ones_the_tests_run():
    found = services()
    web = " ".join(command(found["web"]))
    native = web_argv(Settings())  # what make run and tests/test_stack.py start
    for flag in ("--workers", "--worker-class", "gthread", "--threads", "web:create_app()"):
        assert flag in web and flag in native
    assert "migrate(" in web  # web.fleet.db.migrate, as make run and the test fixtures do
    for i in (0, 1):
        assert command(found[f"miner-{i}"]) == [
            "celery",
            "-A",
            "miners",
            "worker",
            "-Q",
            f"gpu-{i}",
            "-n",
            f"gpu-{i}@%h",
        ]  # the miner fixture's command (tests/conftest.py)
    assert command(found["flower"]) == ["python", "-m", "scripts.flower"]  # tests/test_flower.py
    assert command(found["mqtt-gateway"]) == ["python", "-m", "web.mqtt"]  # test_mqtt


def test_prometheus_scrapes_the_web_tier():
    document = yaml.safe_load(COMPOSE.read_text())
    config = yaml.safe_load(document["configs"]["prometheus"]["content"])
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["web:5000"]


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker compose here: the structure checks above stand in",
)
def test_docker_compose_accepts_the_file():
    env = {"MIA_REGISTRATION_TOKEN": "x", "MIA_FLOWER_PASSWORD": "y", "PATH": "/usr/bin:/bin"}
    subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, env=env, check=True)
