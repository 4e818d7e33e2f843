"""deploy/k8s, workload by workload: GPUs and miner ids for the miners, probes on paths
the processes serve, the web tier run as compose runs it. The manifests as a whole
(validity, Redis, KEDA): tests/k8s/test_manifests.py. Needs kubectl: skipped locally,
with the reason, where there is none, but never in CI.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from scripts.launch import miner_argv, web_argv
from tasks.keys import miner_from_queue, queue_for
from tasks.settings import Settings
from tests.dockerfiles import DATA_DIR, IMAGES, stages
from tests.k8s.render import (
    env_of,
    expand,
    find,
    generated,
    image_name,
    mia_images,
    needs_kubectl,
    settings_map,
)
from web.mqtt import health

pytestmark = needs_kubectl


# -- miners ------------------------------------------------------------------------------


def miner_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    miner = find(docs, "StatefulSet", "miner")
    (container,) = miner["spec"]["template"]["spec"]["containers"]
    return miner, container


@pytest.mark.parametrize("layout", ["base", "overlays/production"])
def test_gpu_miners_ask_for_a_gpu_on_the_gpu_miner_image(rendered, layout):
    _, container = miner_container(rendered[layout])
    assert mia_images()[image_name(container["image"])] == "gpu-miner"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(container)["MIA_ENGINE"]["value"] == "vllm"


def test_cpu_miners_ask_for_no_gpu(rendered):
    miner, container = miner_container(rendered["overlays/cpu"])
    assert mia_images()[image_name(container["image"])] == "miner"
    assert not {"nvidia.com/gpu"} & {
        *container["resources"]["requests"],
        *container["resources"]["limits"],
    }
    assert "tolerations" not in miner["spec"]["template"]["spec"]
    assert env_of(container)["MIA_ENGINE"]["value"] == "llamacpp"


@pytest.mark.parametrize("layout", ["overlays/production", "overlays/cpu"])
def test_each_miner_takes_its_id_from_its_pod_index_and_keeps_its_key(rendered, layout):
    docs = rendered[layout]
    miner, container = miner_container(docs)
    field = env_of(container)["MIA_MINER_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
    # pod miner-3: Kubernetes expands the command into the operator's own line
    command = [expand(word, {"MIA_MINER_ID": "3"}) for word in container["command"]]
    assert command == ["celery", *miner_argv("3")[3:]]
    queue = command[command.index("-Q") + 1]
    assert queue == queue_for("3") and miner_from_queue(queue) == "3"
    assert "replicas" not in miner["spec"]  # KEDA's (or the operator's) to set
    # the key file on the pod's own volume, where the image made the directory its own
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (claim,) = miner["spec"]["volumeClaimTemplates"]
    assert settings_map(docs)["data"]["MIA_DATA_DIR"] == DATA_DIR
    assert mounts[DATA_DIR] == claim["metadata"]["name"]
    pod = miner["spec"]["template"]["spec"]["securityContext"]
    uid = stages(IMAGES["gpu-miner"])[-1].user.split(":")[0]
    assert pod["runAsUser"] == pod["fsGroup"] == int(uid)
    assert miner["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


# -- probes ------------------------------------------------------------------------------


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    return {kind: container[kind] for kind in kinds if kind in container}


def port_of(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_web_probes_ask_paths_the_app_serves(rendered, app, client):
    (container,) = find(rendered["base"], "Deployment", "web")["spec"]["template"]["spec"][
        "containers"
    ]
    found = {kind: probe["httpGet"] for kind, probe in probes(container).items()}
    assert found["livenessProbe"]["path"] == "/healthz"
    assert found["readinessProbe"]["path"] == "/readyz"
    routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}
    bind = container["command"][container["command"].index("--bind") + 1]
    for kind, get in found.items():
        assert get["path"] in routes, kind
        assert client.get(get["path"]).status_code == 200, kind
        assert port_of(container, get["port"]) == int(bind.rsplit(":", 1)[1]), kind


def test_the_gateway_probes_its_own_health_server(rendered):
    (container,) = find(rendered["base"], "Deployment", "mqtt-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(container)
    assert env["MIA_MQTT_HEALTH_HOST"]["value"] == "0.0.0.0"  # the kubelet asks the pod's IP
    port = int(env["MIA_MQTT_HEALTH_PORT"]["value"])
    server = health.serve("127.0.0.1", 0, lambda: (200, {"broker": "connected"}))
    try:
        for kind, probe in probes(container).items():
            get = probe["httpGet"]
            assert port_of(container, get["port"]) == port, kind
            url = f"http://127.0.0.1:{server.port}{get['path']}"
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.status == 200, kind
    finally:
        server.close()
    assert env["MIA_MQTT_CLIENT_ID"]["value"]  # one persistent session across restarts
    gateway = find(rendered["base"], "Deployment", "mqtt-gateway")
    assert gateway["spec"]["replicas"] == 1 and gateway["spec"]["strategy"]["type"] == "Recreate"


def test_flower_probes_its_health_page_and_gets_its_password_from_the_secret(rendered):
    from flower.urls import handlers
    from flower.views.monitor import Healthcheck
    from tornado.web import URLSpec

    specs = [h if isinstance(h, URLSpec) else URLSpec(*h) for h in handlers]

    docs = rendered["base"]
    (container,) = find(docs, "Deployment", "flower")["spec"]["template"]["spec"]["containers"]
    for kind, probe in probes(container).items():
        # Flower's health page, which answers without the basic auth (tornado routes a
        # path to its first match)
        page = next(h for h in specs if h.regex.fullmatch(probe["httpGet"]["path"]))
        assert page.target is Healthcheck, kind
        assert port_of(container, probe["httpGet"]["port"]) == int(
            env_of(container)["MIA_FLOWER_PORT"]["value"]
        )
    assert container["command"] == ["python", "-m", "scripts.flower"]
    password = env_of(container)["MIA_FLOWER_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == generated(docs, "Secret", "mia-secrets")["metadata"]["name"]


# -- the web tier ------------------------------------------------------------------------


def test_the_web_tier_runs_gunicorn_as_compose_does_and_scales_on_cpu(rendered):
    docs = rendered["base"]
    web = find(docs, "Deployment", "web")
    spec = web["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    command = container["command"]
    native = web_argv(Settings())  # what make run, the tests and docker compose start
    assert command[0] == "gunicorn" and "--no-control-socket" in command
    for flag in ("--workers", "--worker-class", "--threads"):
        assert command[command.index(flag) + 1] == native[native.index(flag) + 1], flag
    assert command[-1] == native[-1] == "web:create_app()"
    # a request waits up to MIA_REQUEST_TIMEOUT_S; a rolling update lets it finish
    timeout = float(settings_map(docs)["data"]["MIA_REQUEST_TIMEOUT_S"])
    graceful = int(command[command.index("--graceful-timeout") + 1])
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert timeout < graceful and pause + graceful < spec["terminationGracePeriodSeconds"]
    (migrate,) = spec["initContainers"]
    assert "migrate(" in " ".join(migrate["command"])  # the schema first, as compose does
    assert "replicas" not in web["spec"]  # the autoscaler's
    hpa = find(docs, "HorizontalPodAutoscaler", "web")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert find(docs, "Service", "web")["spec"]["ports"][0]["port"] == 5000
    # miners find the web tier at the Service
    assert settings_map(docs)["data"]["MIA_API_URL"] == "http://web:5000"
