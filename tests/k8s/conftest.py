"""The rendered manifests, once per test session: tests/k8s/render.py says how."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.render import K8S, LAYOUTS, OPERATOR_FILES, render, secrets_command


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def rendered(checkout: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: render(checkout / "deploy" / "k8s" / name) for name in LAYOUTS}
