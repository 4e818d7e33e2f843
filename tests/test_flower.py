"""Flower behind basic auth shows the miner workers, their queues and their tasks; it is
read-only unless MIA_FLOWER_CONTROL=1, and no secret is ever on its command line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts.flower import BadCredentials, credentials
from scripts.launch import ROOT, child_env, free_port, scrubbed_environ
from scripts.processes import spawn, stop, wait_for

AUTH = ("ops", "s3cret")


@pytest.fixture
def flower(settings, tmp_path) -> Iterator[Callable[..., tuple[str, subprocess.Popen[bytes]]]]:
    """Start ``python -m scripts.flower`` with ``env``; (its base URL, the process) once
    it answers, and it sees the worker ``gpu-<worker>``."""
    started: list[subprocess.Popen[bytes]] = []

    def start(worker: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        log = tmp_path / f"flower-{len(started)}.log"
        full = child_env(settings, MIA_FLOWER_USER=AUTH[0], MIA_FLOWER_PORT=str(port), **env)
        proc = spawn([sys.executable, "-m", "scripts.flower"], full, log=log, cwd=ROOT)
        started.append(proc)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthcheck", timeout=2).ok
            except requests.ConnectionError:
                return proc.poll() is not None

        wait_for(up, 60, "flower")
        assert proc.poll() is None, log.read_text()
        wait_for(lambda: workers(base, worker), 30, f"flower to see gpu-{worker}")
        return base, proc

    yield start
    for proc in started:
        stop(proc)


def workers(base: str, name: str) -> dict[str, Any]:
    found = requests.get(f"{base}/api/workers?refresh=1", auth=AUTH, timeout=10).json()
    return {k: v for k, v in found.items() if k.startswith(f"gpu-{name}@")}


def test_flower_needs_auth_and_shows_workers_and_tasks_read_only(
    api, miner, flower, settings, tmp_path
):
    found = miner("0")
    secret = tmp_path / "flower-password"
    secret.write_text(f"{AUTH[1]}\n")
    base, proc = flower("0", MIA_FLOWER_PASSWORD_FILE=str(secret))
    # no secret on its command line (ps shows that): not the password, not the broker URL
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert b"flower" in cmdline and AUTH[1].encode() not in cmdline
    assert settings.redis_url.encode() not in cmdline
    assert requests.get(f"{base}/api/workers", timeout=5).status_code == 401
    assert requests.get(f"{base}/api/workers", auth=("ops", "wrong"), timeout=5).status_code == 401
    (name,) = workers(base, "0")
    assert "gpu-0" in {q["name"] for q in workers(base, "0")[name]["active_queues"]}

    def task() -> list:
        api.post(f"{api.base}/chat/direct", json={"message": "a secret message " * 5})
        tasks = requests.get(f"{base}/api/tasks", auth=AUTH, timeout=5).json()
        return [t for t in tasks.values() if t.get("name") == "mia.generate"]

    seen = wait_for(task, 30, "flower to see a task")
    assert isinstance(seen, list)
    args = seen[0]["args"]
    assert args.startswith("(job=") and "model=" in args and "project=" in args
    assert "a secret message " * 5 not in args  # a preview only
    # read-only: the password shows the fleet, it does not stop or resize a miner
    for action in ("shutdown", "pool/shrink", "queue/cancel-consumer"):
        url = f"{base}/api/worker/{action}/{name}"
        refused = requests.post(url, data={"queue": "gpu-0", "n": 1}, auth=AUTH, timeout=10)
        assert refused.status_code == 403, (action, refused.text)
    page = requests.get(f"{base}/worker/{name}", auth=AUTH, timeout=10).text
    assert "worker-shutdown" not in page  # the button is gone
    assert found.proc.poll() is None
    assert "gpu-0" in {q["name"] for q in workers(base, "0")[name]["active_queues"]}


def test_with_control_flowers_password_shuts_a_miner_down(miner, flower):
    """Why read-only is the default: with MIA_FLOWER_CONTROL=1, Flower's password stops
    a miner (and resizes pools, cancels its queue, revokes tasks)."""
    found = miner("0")
    base, _ = flower("0", MIA_FLOWER_PASSWORD=AUTH[1], MIA_FLOWER_CONTROL="1")
    (name,) = workers(base, "0")
    done = requests.post(f"{base}/api/worker/shutdown/{name}", auth=AUTH, timeout=10)
    assert done.status_code == 200, done.text
    assert found.proc.wait(timeout=30) == 0


def test_flower_refuses_to_start_without_credentials():
    proc = spawn([sys.executable, "-m", "scripts.flower"], scrubbed_environ(), cwd=ROOT)
    assert proc.wait(30) == 2


def test_flower_refuses_a_comma_which_would_split_its_list_of_credentials():
    env = {**scrubbed_environ(), "MIA_FLOWER_USER": "ops", "MIA_FLOWER_PASSWORD": "a,b"}
    proc = spawn([sys.executable, "-m", "scripts.flower"], env, cwd=ROOT)
    assert proc.wait(30) == 2


def test_the_password_comes_from_its_file_or_its_variable_never_both(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-file\nignored\n")
    user = {"MIA_FLOWER_USER": "ops"}
    assert credentials({**user, "MIA_FLOWER_PASSWORD_FILE": str(secret)}) == ("ops", "from-file")
    assert credentials({**user, "MIA_FLOWER_PASSWORD": "from-env"}) == ("ops", "from-env")
    for bad in (
        {**user, "MIA_FLOWER_PASSWORD_FILE": str(secret), "MIA_FLOWER_PASSWORD": "x"},
        {**user, "MIA_FLOWER_PASSWORD_FILE": str(tmp_path / "missing")},
        {**user, "MIA_FLOWER_PASSWORD_FILE": str(tmp_path)},  # a directory
        {"MIA_FLOWER_PASSWORD": "x"},  # no user
    ):
        with pytest.raises(BadCredentials):
            credentials(bad)
