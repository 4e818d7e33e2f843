"""docker-compose.yml: the whole stack, each command one this suite also runs natively.

No Docker engine runs on these machines, so the file is checked for structure (and
with ``docker compose config`` where that command exists): each service on its image,
the GPU miner behind the ``gpu`` profile with a device reserved, every volume mounted
where its image made the directory for it, and the secrets from an ``.env`` that the
command in docs/operations.md makes once from .env.example.
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
from tests.dockerfiles import DATA_DIR, IMAGES, stages

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
        "gpu-miner",
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
    assert command(found["gpu-miner"])[:5] == ["celery", "-A", "miners", "worker", "-Q"]


def image(service: dict) -> str:
    """The image (a key of tests.dockerfiles.IMAGES) a service is built from."""
    build = service["build"]
    assert build["context"] == "."  # the repository root, filtered by .dockerignore
    (name,) = [name for name, path in IMAGES.items() if path == ROOT / build["dockerfile"]]
    return name


def test_each_service_runs_on_its_image():
    found = services()
    built = {name: image(service) for name, service in found.items() if "build" in service}
    assert built == {
        "web": "gateway",
        "flower": "gateway",
        "mqtt-gateway": "gateway",
        "miner-0": "miner",
        "miner-1": "miner",
        "gpu-miner": "gpu-miner",
    }
    for name in ("miner-0", "miner-1"):
        assert found[name]["environment"]["MIA_ENGINE"] == "llamacpp"
    assert found["gpu-miner"]["environment"]["MIA_ENGINE"] == "vllm"


def test_the_gpu_miner_is_in_the_gpu_profile_with_an_nvidia_gpu_reserved():
    found = services()
    profiled = {
        name: service["profiles"] for name, service in found.items() if "profiles" in service
    }
    assert profiled == {"gpu-miner": ["gpu"]}  # plain `docker compose up` starts the rest
    (device,) = found["gpu-miner"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device.get("count") or device.get("device_ids")
    assert found["gpu-miner"]["depends_on"]["web"] == {"condition": "service_healthy"}


def mounts(service: dict) -> dict[str, str]:
    """A service's volumes: mount target -> source."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def test_the_miners_keep_their_keys_on_a_volume_their_user_owns():
    document = yaml.safe_load(COMPOSE.read_text())
    for name in ("miner-0", "miner-1", "gpu-miner"):
        service = document["services"][name]
        final = stages(IMAGES[image(service)])[-1]
        data_dir = service["environment"]["MIA_DATA_DIR"]
        # where the image made the directory its user owns (tests/test_images.py): a new
        # volume mounted there starts out with that owner, so the key can be written
        assert data_dir == final.env["MIA_DATA_DIR"] == DATA_DIR
        assert mounts(service)[data_dir] == "miner-keys"
    assert "miner-keys" in document["volumes"]


def test_every_named_volume_is_declared_and_mosquitto_persists_on_one():
    document = yaml.safe_load(COMPOSE.read_text())
    for name, service in document["services"].items():
        for target, source in mounts(service).items():
            assert source.startswith((".", "/")) or source in document["volumes"], (name, target)
    conf = directives(MOSQUITTO / "mosquitto.conf")
    kept = mounts(document["services"]["mosquitto"])[conf["persistence_location"].rstrip("/")]
    assert kept in document["volumes"]


VARIABLE = re.compile(r"\$\{(\w+)(:?[-?])?([^}]*)\}")


def variables() -> dict[str, str]:
    """Each ${VAR} the compose file reads: VAR -> its operator (":?" required, ":-" default)."""
    return {m.group(1): m.group(2) or "" for m in VARIABLE.finditer(COMPOSE.read_text())}


def env_file(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value
    return found


def docs_env_command() -> str:
    """The command docs/operations.md gives to make .env."""
    text = (ROOT / "docs" / "operations.md").read_text()
    (block,) = re.findall(r"```bash\n(test -e \.env .*?)```", text, re.S)
    return str(block)


def test_compose_reads_its_secrets_from_the_env_file_the_docs_make(tmp_path):
    used = variables()
    required = {name for name, op in used.items() if op == ":?"}
    assert {"MIA_REGISTRATION_TOKEN", "MIA_ADMIN_TOKEN", "MIA_FLOWER_PASSWORD"} <= required
    example = env_file(ROOT / ".env.example")
    assert required <= set(example), "every secret compose asks for has its line"
    assert all(example[name] == "" for name in required), "no secret is shipped"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()

    (tmp_path / ".env.example").write_text((ROOT / ".env.example").read_text())
    subprocess.run(["bash", "-c", docs_env_command()], cwd=tmp_path, check=True, timeout=30)
    made = env_file(tmp_path / ".env")
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0  # its owner's only
    secrets = [made[name] for name in required]
    assert all(len(value) >= 32 for value in secrets) and len(set(secrets)) == len(secrets)
    # URL-safe: the gateway's password goes into MIA_MQTT_URL as it is
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", value) for value in secrets)
    subprocess.run(["bash", "-c", docs_env_command()], cwd=tmp_path, check=True, timeout=30)
    assert env_file(tmp_path / ".env") == made, "run again, it keeps the tokens it made"


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
    env = {name: "x" for name in env_file(ROOT / ".env.example")}
    env["PATH"] = "/usr/bin:/bin"
    argv = ["docker", "compose", "--profile", "gpu", "config", "-q"]
    subprocess.run(argv, cwd=ROOT, env=env, check=True)
