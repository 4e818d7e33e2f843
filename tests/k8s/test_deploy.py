"""deploy/k8s as an operator deploys it: the secrets recipe (no secret outside the
Secrets), the images of deploy/docker, resources and privileges, Mosquitto's files, and
Redis' start script choosing its master. Rendering: tests/k8s/render.py.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import ROOT
from tests.dockerfiles import IMAGES, stages
from tests.k8s.render import (
    K8S,
    LAYOUTS,
    OPERATOR_FILES,
    containers,
    env_file,
    env_of,
    expand,
    find,
    generated,
    image_name,
    is_mia,
    mia_images,
    needs_kubectl,
    pod_specs,
    secrets_command,
    settings_map,
)

pytestmark = needs_kubectl

# -- secrets -----------------------------------------------------------------------------


def operator_secrets(checkout: Path) -> dict[str, str]:
    made = env_file(checkout / "deploy/k8s/base/secrets.env")
    passwd = (checkout / "deploy/k8s/components/mosquitto/mosquitto-passwd").read_text()
    return {**made, "mosquitto-passwd": passwd}


def test_the_docs_command_makes_every_secret_once(checkout, tmp_path):
    example = env_file(K8S / "base" / "secrets.env.example")
    assert example and all(value == "" for value in example.values()), "no secret is shipped"
    made = env_file(checkout / "deploy/k8s/base/secrets.env")
    assert set(made) == set(example)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32,}", v) for v in made.values())  # URL-safe
    assert len(set(made.values())) == len(made)
    assert (checkout / "deploy/k8s/base/secrets.env").stat().st_mode & 0o077 == 0
    subprocess.run(["bash", "-c", secrets_command()], cwd=checkout, check=True, timeout=30)
    assert env_file(checkout / "deploy/k8s/base/secrets.env") == made, "it keeps what it made"
    for name in OPERATOR_FILES:
        assert f"deploy/k8s/{name}" in (ROOT / ".gitignore").read_text().splitlines()
        assert f"deploy/k8s/{name}" in (ROOT / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_secret_value_is_in_any_object_but_the_secrets(rendered, checkout, layout):
    docs = rendered[layout]
    secrets = operator_secrets(checkout)
    forms = {
        v for value in secrets.values() for v in (value, base64.b64encode(value.encode()).decode())
    }
    for doc in docs:
        if doc["kind"] != "Secret":
            text = json.dumps(doc)
            assert not [form for form in forms if form in text], doc["metadata"]["name"]
    secret = generated(docs, "Secret", "mia-secrets")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == env_file(checkout / "deploy/k8s/base/secrets.env")
    names = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Secret"}
    for name, container in containers(docs):
        assert not [s for s in container.get("envFrom", []) if "secretRef" in s], name
        for var, entry in env_of(container).items():
            assert var not in decoded or "secretKeyRef" in entry.get("valueFrom", {}), (name, var)
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in names and ref["key"] in decoded, (name, var)


def test_urls_that_need_a_secret_are_built_from_it_by_kubernetes(rendered, checkout):
    secrets = operator_secrets(checkout)
    for name, container in containers(rendered["base"]):
        env = env_of(container)
        for var in ("MIA_DATABASE_URL", "MIA_MQTT_URL"):
            if var in env:
                value = env[var]["value"]
                used = re.findall(r"\$\((\w+)\)", value)
                assert used and all(list(env).index(u) < list(env).index(var) for u in used)
                url = urlsplit(expand(value, secrets))
                assert url.password in secrets.values(), (name, var)


# -- images, users, resources ------------------------------------------------------------


def compose_images() -> set[str]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {s["image"] for s in document["services"].values() if "image" in s}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_images_are_the_three_of_deploy_docker_and_composes_others(rendered, layout):
    used = set()
    for name, container in containers(rendered[layout]):
        if is_mia(container):
            used.add(mia_images()[image_name(container["image"])])
        else:
            assert container["image"] in compose_images(), name
    for workload, spec in pod_specs(rendered[layout]):
        mia = [c for c in spec["containers"] if is_mia(c)]
        for container in mia:
            uid = stages(IMAGES[mia_images()[image_name(container["image"])]])[-1].user
            assert spec["securityContext"]["runAsUser"] == int(uid.split(":")[0]), workload
    assert used == {"gateway", "miner" if layout == "overlays/cpu" else "gpu-miner"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_container_has_requests_and_limits_and_no_privileges(rendered, layout):
    for name, container in containers(rendered[layout]):
        resources = container["resources"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[part]), (name, part)
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
    for workload, spec in pod_specs(rendered[layout]):
        assert spec["securityContext"]["runAsNonRoot"] is True, workload


# -- Mosquitto ---------------------------------------------------------------------------


def test_mosquittos_files_are_deploy_mosquittos(rendered):
    docs = rendered["overlays/production"]
    config = generated(docs, "ConfigMap", "mosquitto-config")
    for name in ("mosquitto.conf", "acl"):
        original = (ROOT / "deploy" / "mosquitto" / name).read_text()
        assert (K8S / "components" / "mosquitto" / name).read_text() == original, name
        assert config["data"][name] == original, name
    conf = dict(
        line.split(None, 1)
        for line in config["data"]["mosquitto.conf"].splitlines()
        if line.strip() and not line.startswith("#")
    )
    (container,) = find(docs, "StatefulSet", "mosquitto")["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert conf["password_file"] == f"{mounts['passwd']}/mosquitto-passwd"
    assert conf["acl_file"] == f"{mounts['config']}/acl"
    assert conf["persistence_location"].rstrip("/") == mounts["data"]
    host = urlsplit(env_of(gateway_container(docs))["MIA_MQTT_URL"]["value"])
    assert (host.hostname, host.port) == (
        "mosquitto",
        find(docs, "Service", "mosquitto")["spec"]["ports"][0]["port"],
    )
    assert host.username == "mia-gateway" and "user mia-gateway" in config["data"]["acl"]


def gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = find(docs, "Deployment", "mqtt-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    return container


# -- Redis' start script -----------------------------------------------------------------

DOMAIN = "redis-headless.mia.svc.cluster.local"


def start(tmp_path: Path, role: str, me: int, answers: dict[int, str]) -> tuple[list[str], str]:
    """Run base/redis/start.sh as pod redis-<me>, whose peers' sentinels answer
    ``answers`` (ordinal -> redis-cli's output); returns the command it execs, and the
    Sentinel configuration it wrote."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cases = "".join(
        f"  redis-{i}.{DOMAIN}) printf '%s\\n' '{answer}' ;;\n" for i, answer in answers.items()
    )
    stubs = {
        "hostname": f"echo redis-{me}.{DOMAIN}\n",
        "redis-cli": 'case "$2" in\n'
        + cases
        + '  *) echo "Could not connect to Redis at $2:26379" >&2; exit 1 ;;\nesac\n',
        "redis-server": 'echo "$@"\n',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "MIA_REDIS_SENTINEL_MASTER": "mia",
        "REDIS_NODES": "3",
        "SENTINEL_DIR": str(tmp_path),
        "REDIS_DIR": str(tmp_path),
        "REDIS_CONF": str(K8S / "base" / "redis" / "redis.conf"),
    }
    script = K8S / "base" / "redis" / "start.sh"
    out = subprocess.run(
        ["sh", str(script), role], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    conf = tmp_path / "sentinel.conf"
    return out.stdout.splitlines()[-1].split(), conf.read_text() if conf.exists() else ""


def test_a_new_set_starts_with_redis_0_as_master(tmp_path):
    # on a copy of the ConfigMap's file, where Sentinel's CONFIG REWRITE may write
    assert start(tmp_path, "redis", 0, {})[0] == [
        str(tmp_path / "redis.conf"),
        "--replica-announce-ip",
        f"redis-0.{DOMAIN}",
    ]
    assert (tmp_path / "redis.conf").read_text() == (K8S / "base/redis/redis.conf").read_text()
    command, _ = start(tmp_path, "redis", 2, {})
    assert command[-3:] == ["--replicaof", f"redis-0.{DOMAIN}", "6379"]
    assert command[1:3] == ["--replica-announce-ip", f"redis-2.{DOMAIN}"]


def test_a_pod_back_after_a_failover_follows_the_master_the_sentinels_name(tmp_path):
    command, _ = start(tmp_path, "redis", 0, {1: f"redis-2.{DOMAIN}"})
    assert command[-3:] == ["--replicaof", f"redis-2.{DOMAIN}", "6379"]
    # an error from a sentinel is no master's name
    command, _ = start(tmp_path, "redis", 1, {0: "ERR No such master with that name"})
    assert command[-3:] == ["--replicaof", f"redis-0.{DOMAIN}", "6379"]


def test_the_sentinels_monitor_the_master_by_the_configmaps_name(tmp_path, rendered):
    command, conf = start(tmp_path, "sentinel", 1, {2: f"redis-2.{DOMAIN}"})
    assert command == [str(tmp_path / "sentinel.conf"), "--sentinel"]
    lines = conf.splitlines()
    assert f"sentinel monitor mia redis-2.{DOMAIN} 6379 2" in lines
    assert f"sentinel announce-ip redis-1.{DOMAIN}" in lines
    assert {"sentinel resolve-hostnames yes", "sentinel announce-hostnames yes"} <= set(lines)
    assert settings_map(rendered["base"])["data"]["MIA_REDIS_SENTINEL_MASTER"] == "mia"
