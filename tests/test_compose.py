"""docker-compose.yml: the whole stack, each command one this suite also runs natively.

No Docker engine runs on these machines, so the file is checked for structure (and
with ``docker compose config`` where that command exists).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from chat_service.projects import load_projects
from scripts.launch import web_argv
from tasks.settings import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
MOSQUITTO = ROOT / "deploy" / "mosquitto"


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


def directives(path) -> dict[str, str]:
    """A Mosquitto config file's settings (each is set once in ours)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            assert key not in found, f"{key} set twice"
            found[key] = value
    return found


def acl(path) -> dict[str, set[tuple[str, str]]]:
    """A Mosquitto ACL file: user -> {(access, topic)}; "" for lines before any user
    (those would apply to anonymous clients)."""
    found: dict[str, set[tuple[str, str]]] = {"": set()}
    user = ""
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            found.setdefault(user, set())
        else:
            assert words[0] == "topic" and len(words) == 3, line
            found[user].add((words[1], words[2]))
    return found


def test_mosquitto_lets_no_one_in_anonymously_and_each_project_only_to_its_topics():
    document = yaml.safe_load(COMPOSE.read_text())
    mosquitto = document["services"]["mosquitto"]
    targets = {c["source"]: c["target"] for c in mosquitto["configs"]}
    assert targets == {
        "mosquitto": "/mosquitto/config/mosquitto.conf",
        "mosquitto-acl": "/mosquitto/config/acl",
    }
    for source, name in (("mosquitto", "mosquitto.conf"), ("mosquitto-acl", "acl")):
        assert document["configs"][source] == {"file": f"./deploy/mosquitto/{name}"}
    conf = directives(MOSQUITTO / "mosquitto.conf")
    assert conf["allow_anonymous"] == "false"
    assert conf["acl_file"] == targets["mosquitto-acl"]
    assert (
        mosquitto["secrets"] == ["mosquitto-passwd"] and "mosquitto-passwd" in document["secrets"]
    )
    assert conf["password_file"] == "/run/secrets/mosquitto-passwd"  # where secrets go
    assert int(conf["max_inflight_messages"]) >= Settings().mqtt_in_flight
    assert conf["persistence"] == "true"
    assert any(v.endswith(":/mosquitto/data") for v in mosquitto["volumes"])
    rules = acl(MOSQUITTO / "acl")
    assert rules.pop("") == set()  # nothing for anonymous or every user
    assert rules.pop("mia-gateway") == {
        ("read", "+/user_input"),
        ("write", "+/assistant_response/#"),
    }
    assert set(rules) == set(load_projects())  # a user per shipped project, no other
    for project, granted in rules.items():
        assert granted == {
            ("write", f"{project}/user_input"),
            ("read", f"{project}/assistant_response/#"),
        }
    gateway = document["services"]["mqtt-gateway"]
    # as compose hands it over: ${MIA_MQTT_GATEWAY_PASSWORD:?...} substituted
    url = urlparse(re.sub(r"\$\{[^}]*\}", "secret", gateway["environment"]["MIA_MQTT_URL"]))
    assert (url.scheme, url.username, url.hostname) == ("mqtt", "mia-gateway", "mosquitto")


def test_compose_probes_the_gateway_health_check():
    gateway = services()["mqtt-gateway"]
    port = gateway["environment"].get("MIA_MQTT_HEALTH_PORT", Settings().mqtt_health_port)
    probe = " ".join(gateway["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in probe  # web/mqtt/health.py; 503 fails it
    assert "MIA_MQTT_HEALTH_HOST" not in gateway["environment"]  # 127.0.0.1: in-container


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker compose here: the structure checks above stand in",
)
def test_docker_compose_accepts_the_file():
    env = {
        "MIA_REGISTRATION_TOKEN": "x",
        "MIA_ADMIN_TOKEN": "z",
        "MIA_FLOWER_PASSWORD": "y",
        "MIA_MQTT_GATEWAY_PASSWORD": "w",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, env=env, check=True)
