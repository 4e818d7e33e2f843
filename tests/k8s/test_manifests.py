"""deploy/k8s: valid for Kubernetes and KEDA, and saying what we mean: Redis settings
from the ConfigMap, GPUs, miner ids, probes on paths the processes serve, the web tier.
How the manifests are rendered and validated: tests/k8s/render.py. Needs kubectl:
skipped locally, with the reason, where there is none, but never in CI.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from scripts.launch import miner_argv, web_argv
from tasks.broker.layout import queue_lists
from tasks.keys import SHARED_QUEUE, miner_from_queue, queue_for
from tasks.settings import Settings
from tests.dockerfiles import DATA_DIR, IMAGES, stages
from tests.k8s.render import (
    KEDA_SCHEMA,
    KUBERNETES,
    LAYOUTS,
    containers,
    env_of,
    expand,
    find,
    generated,
    image_name,
    is_mia,
    mia_images,
    needs_kubectl,
    settings_map,
)
from web.fleet.gauges import FleetCollector
from web.mqtt import health

pytestmark = needs_kubectl

# -- validity ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_object_is_valid_for_kubernetes(rendered, layout, version):
    errors = []
    for doc in rendered[layout]:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: the next test
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {list(exc.path)}: {exc}")
    assert errors == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_everything_is_in_the_one_namespace(rendered, layout):
    (namespace,) = [d["metadata"]["name"] for d in rendered[layout] if d["kind"] == "Namespace"]
    elsewhere = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in rendered[layout]
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != namespace
    ]
    assert elsewhere == []


def keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("layout", ["overlays/production", "overlays/prometheus"])
def test_the_scaled_object_is_valid_for_keda(rendered, layout):
    objects = [d for d in rendered[layout] if d["apiVersion"].startswith("keda.sh/")]
    assert [d["kind"] for d in objects] == ["ScaledObject"]
    assert [e.message for e in keda_validator().iter_errors(objects[0])] == []


def test_the_validation_is_strict(rendered):
    """A misspelt field fails both checks: they are not letting everything through."""
    web = json.loads(json.dumps(find(rendered["base"], "Deployment", "web")))
    web["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES[0], strict=True)
    scaled = json.loads(json.dumps(find(rendered["overlays/production"], "ScaledObject", "miner")))
    scaled["spec"]["triggers"][0]["metadata"]["listname"] = "shared"
    assert list(keda_validator().iter_errors(scaled))
    del scaled["spec"]["triggers"][0]["metadata"]["listname"]
    scaled["spec"]["minReplicas"] = 1
    assert list(keda_validator().iter_errors(scaled))


# -- Redis -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_mia_container_reads_redis_from_the_configmap(rendered, layout):
    docs = rendered[layout]
    config = settings_map(docs)
    assert {"MIA_REDIS_URL", "MIA_REDIS_SENTINEL_MASTER"} <= set(config["data"])
    seen = set()
    for name, container in containers(docs):
        if not is_mia(container):
            continue
        seen.add(name.split("/")[0])
        refs = [
            s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s
        ]
        assert config["metadata"]["name"] in refs, name
        overridden = {"MIA_REDIS_URL", "MIA_REDIS_SENTINEL_MASTER"} & set(env_of(container))
        assert not overridden, name
    assert {"web", "miner", "mqtt-gateway", "flower"} <= seen
    # the sentinels monitor the master by the same name, from the same ConfigMap
    for _, container in containers(docs):
        if image_name(container["image"]) == "redis":
            ref = env_of(container)["MIA_REDIS_SENTINEL_MASTER"]["valueFrom"]["configMapKeyRef"]
            assert ref == {"name": config["metadata"]["name"], "key": "MIA_REDIS_SENTINEL_MASTER"}


def sentinel_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """kombu's Sentinel URL: (the sentinels' (host, port), the db in the path)."""
    parts = [urlsplit(part) for part in url.split(";")]
    assert all(p.scheme == "sentinel" and p.hostname and p.port for p in parts), url
    assert all(p.path == "" for p in parts[:-1]) and re.fullmatch(r"/\d+", parts[-1].path), url
    assert not any(p.password for p in parts), "a password would make it a secret"
    return [(str(p.hostname), int(p.port or 0)) for p in parts], parts[-1].path[1:]


def test_the_redis_url_names_the_statefulsets_sentinels(rendered):
    docs = rendered["base"]
    data = settings_map(docs)["data"]
    sentinels, db = sentinel_url(data["MIA_REDIS_URL"])
    redis = find(docs, "StatefulSet", "redis")
    service = redis["spec"]["serviceName"]
    replicas = redis["spec"]["replicas"]
    assert sentinels == [(f"redis-{i}.{service}", 26379) for i in range(replicas)]
    assert db == "0" and data["MIA_REDIS_SENTINEL_MASTER"]
    headless = find(docs, "Service", service)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["spec"]["ports"]} == {6379, 26379}
    for container in redis["spec"]["template"]["spec"]["containers"]:
        assert env_of(container)["REDIS_NODES"]["value"] == str(replicas)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_redis_network_policy_admits_every_pod_of_the_stack(rendered, layout):
    docs = rendered[layout]
    policy = find(docs, "NetworkPolicy", "redis")
    redis = find(docs, "StatefulSet", "redis")
    selected = policy["spec"]["podSelector"]["matchLabels"].items()
    assert selected <= redis["spec"]["template"]["metadata"]["labels"].items()
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    admitted = peer["podSelector"]["matchLabels"].items()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"].items()
            assert admitted <= labels, doc["metadata"]["name"]
    assert {p["port"] for p in rule["ports"]} == {6379, 26379}


def test_keda_counts_every_list_of_the_shared_queue_through_the_same_sentinels(rendered):
    docs = rendered["overlays/production"]
    data = settings_map(docs)["data"]
    sentinels, db = sentinel_url(data["MIA_REDIS_URL"])
    namespace = find(docs, "Namespace", "mia")["metadata"]["name"]
    scaled = find(docs, "ScaledObject", "miner")
    assert scaled["metadata"]["namespace"] == namespace
    target = scaled["spec"]["scaleTargetRef"]
    assert find(docs, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    triggers = scaled["spec"]["triggers"]
    for trigger in triggers:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-sentinel"
        # KEDA connects from its own namespace: the same hosts, with ours
        assert meta["addresses"] == ",".join(f"{h}.{namespace}:{p}" for h, p in sentinels)
        assert meta["sentinelMaster"] == data["MIA_REDIS_SENTINEL_MASTER"]
        assert meta["databaseIndex"] == db
    # every priority list of `shared`, kombu's real names, added up by the formula
    assert [t["metadata"]["listName"] for t in triggers] == queue_lists(SHARED_QUEUE)
    names = [t["name"] for t in triggers]
    formula = scaled["spec"]["advanced"]["scalingModifiers"]["formula"]
    assert sorted(re.findall(r"\w+", formula)) == sorted(names)
    assert set(re.sub(r"[\w\s]", "", formula)) == {"+"}
    # KEDA reaches Redis through the NetworkPolicy that admits its namespace
    policy = find(docs, "NetworkPolicy", "redis-from-keda")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "keda"
    }


def test_the_prometheus_trigger_reads_the_gauge_the_web_tier_exports(rendered):
    scaled = find(rendered["overlays/prometheus"], "ScaledObject", "miner")
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    metric, label, value = re.fullmatch(r"max\((\w+)\{(\w+)=\"(\w+)\"\}\)", query).groups()

    class Fleet:  # the registry FleetCollector reads: one waiting job on `shared`
        def live(self) -> list:
            return []

        def queue_depths(self, miners: list) -> dict[str, int]:
            return {SHARED_QUEUE: 1}

    families = {f.name: f for f in FleetCollector(Fleet()).collect()}  # type: ignore[arg-type]
    (sample,) = families[metric].samples
    assert sample.labels == {label: value} and value == SHARED_QUEUE


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
