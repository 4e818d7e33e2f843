"""Flower behind basic auth shows the miner workers, their queues and their tasks."""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from scripts.launch import ROOT, child_env, free_port, scrubbed_environ
from scripts.processes import spawn, stop, wait_for

AUTH = ("ops", "s3cret")


def test_flower_needs_auth_and_shows_workers_and_tasks(api, miner, settings, tmp_path):
    miner("0")
    port = free_port()
    env = child_env(
        settings, MIA_FLOWER_USER=AUTH[0], MIA_FLOWER_PASSWORD=AUTH[1], MIA_FLOWER_PORT=str(port)
    )
    log = tmp_path / "flower.log"
    flower = spawn([sys.executable, "-m", "scripts.flower"], env, log=log, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthcheck", timeout=2).ok
            except requests.ConnectionError:
                return flower.poll() is not None

        wait_for(up, 60, "flower")
        assert flower.poll() is None, log.read_text()
        # the password is in Flower's environment, not on its command line (ps shows that)
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes()
        assert b"flower" in cmdline and AUTH[1].encode() not in cmdline
        assert requests.get(f"{base}/api/workers", timeout=5).status_code == 401
        assert (
            requests.get(f"{base}/api/workers", auth=("ops", "wrong"), timeout=5).status_code == 401
        )

        def worker() -> dict:
            found = requests.get(f"{base}/api/workers?refresh=1", auth=AUTH, timeout=10).json()
            return {k: v for k, v in found.items() if k.startswith("gpu-0@")}

        workers = wait_for(worker, 30, "flower to see gpu-0")
        assert isinstance(workers, dict)
        (info,) = workers.values()
        assert "gpu-0" in {q["name"] for q in info["active_queues"]}

        def task() -> list:
            api.post(f"{api.base}/chat/direct", json={"message": "a secret message " * 5})
            tasks = requests.get(f"{base}/api/tasks", auth=AUTH, timeout=5).json()
            return [t for t in tasks.values() if t.get("name") == "mia.generate"]

        seen = wait_for(task, 30, "flower to see a task")
        assert isinstance(seen, list)
        args = seen[0]["args"]
        assert args.startswith("(job=") and "model=" in args and "project=" in args
        assert "a secret message " * 5 not in args  # a preview only
    finally:
        stop(flower)


def test_flower_refuses_to_start_without_credentials():
    proc = spawn([sys.executable, "-m", "scripts.flower"], scrubbed_environ(), cwd=ROOT)
    assert proc.wait(30) == 2


def test_flower_refuses_a_comma_which_would_split_its_list_of_credentials():
    env = {**scrubbed_environ(), "MIA_FLOWER_USER": "ops", "MIA_FLOWER_PASSWORD": "a,b"}
    proc = spawn([sys.executable, "-m", "scripts.flower"], env, cwd=ROOT)
    assert proc.wait(30) == 2
