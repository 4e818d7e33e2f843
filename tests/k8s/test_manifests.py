"""deploy/k8s as a whole: valid for Kubernetes and KEDA, in one namespace, with Redis
settings from the ConfigMap and KEDA counting the shared queue through the same
sentinels. Each workload's own checks (miners, probes, the web tier):
tests/k8s/test_workloads.py. How the manifests are rendered and validated:
tests/k8s/render.py. Needs kubectl: skipped locally, with the reason, where there is
none, but never in CI.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from tasks.keys import SHARED_QUEUE, Keys
from tests.k8s.render import (
    KEDA_SCHEMA,
    KUBERNETES,
    LAYOUTS,
    containers,
    env_of,
    find,
    image_name,
    is_mia,
    needs_kubectl,
    settings_map,
)
from web.fleet.gauges import FleetCollector

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
    assert [t["metadata"]["listName"] for t in triggers] == Keys("mia").queue_lists(SHARED_QUEUE)
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
