"""``make run``: the whole stack on one machine, in the foreground.

Redis (MIA_REDIS_URL when it answers, else an embedded redis-server), the
database schema, the web tier (gunicorn) on MIA_HOST:MIA_PORT and one miner
``gpu-0`` (and the MQTT gateway when MIA_MQTT_URL is set: "up" only once its health
check says it is subscribed). Ctrl-C (or SIGTERM) stops everything it started, miner
first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from types import FrameType

import requests

from scripts import redis_server
from scripts.launch import ROOT, gateway_argv, miner_argv, start, start_web
from scripts.processes import spawn, stop
from tasks.connections import redis_options
from tasks.settings import Settings
from tasks.tokens import admin_token, registration_token


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = dict(os.environ)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = threading.Event()

    def start(self) -> None:
        self._redis()
        token = registration_token(self.settings, make=True)
        base = f"http://{self.settings.host}:{self.settings.port}"
        self.env.update(MIA_REGISTRATION_TOKEN=token, MIA_API_URL=base)
        # gunicorn's workers add up their Prometheus counters through files here
        metrics_dir = Path(self.settings.data_dir) / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
        web_env = {**self.env, "MIA_ADMIN_TOKEN": admin_token(self.settings, make=True)}
        self.procs.append(("web", start_web(self.settings, web_env, None)))  # not miners
        heartbeat = partial(self._has_miner, base)
        miner = start(miner_argv("0"), self.env, None, heartbeat, 180, "miner gpu-0 to heartbeat")
        self.procs.append(("miner gpu-0", miner))
        if self.settings.mqtt_url:
            self._gateway()
        print(f"\nMIA is up: web {base}, miner gpu-0 ({self.settings.engine}). Try:\n")
        print(f"  curl -s -XPOST {base}/chat/direct -H 'content-type: application/json' \\")
        print('       -d \'{"message":"Hello"}\'\n')
        where = "MIA_ADMIN_TOKEN" if self.settings.admin_token else self.settings.admin_token_file
        print(f"Admin token (Authorization: Bearer ...): {where}")
        print("Ctrl-C stops everything.", flush=True)

    def _gateway(self) -> None:
        """The MQTT gateway; up once its health check says it is subscribed."""
        host, port = self.settings.mqtt_health_host, self.settings.mqtt_health_port
        if not port:  # no health endpoint to ask: started, not waited for
            self.procs.append(("mqtt gateway", spawn(gateway_argv(), self.env, cwd=ROOT)))
            return
        health = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/healthz"
        subscribed = partial(self._get_ok, health)
        gateway = start(gateway_argv(), self.env, None, subscribed, 60, "the MQTT gateway")
        self.procs.append(("mqtt gateway", gateway))
        print(f"MQTT gateway on {self.settings.mqtt_url}: subscribed ({health})", flush=True)

    @staticmethod
    def _get_ok(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _redis(self) -> None:
        if redis_server.answers(self.settings.redis_url, **redis_options(self.settings)):
            print(f"Using Redis at {self.settings.redis_url}", flush=True)
            return
        port = self.settings.embedded_redis_port
        data = Path(self.settings.data_dir)
        print(f"No Redis at {self.settings.redis_url}; starting one on 127.0.0.1:{port}")
        self.procs.append(("redis", redis_server.start(port, data / "redis", data / "redis.log")))
        self.env["MIA_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        self.settings = self.settings.with_overrides(redis_url=self.env["MIA_REDIS_URL"])

    def _has_miner(self, base: str) -> bool:
        self._check_children()
        miners = requests.get(f"{base}/metrics/gpus", timeout=2).json()["miners"]
        return any(m["miner_id"] == "0" and m["status"] != "offline" for m in miners)

    def _check_children(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}")

    def wait(self) -> None:
        """Until a signal, or until a child dies."""
        while not self.stopping.wait(0.5):
            self._check_children()

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            print(f"stopping {name}", flush=True)
            stop(proc)


def main() -> int:
    stack = Stack(Settings.from_env())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.stopping.set()
        raise KeyboardInterrupt

    # Installed explicitly: a shell that starts us in the background ignores SIGINT.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        stack.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
