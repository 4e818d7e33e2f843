"""``make run``: the whole stack on one machine, in the foreground.

Redis (MIA_REDIS_URL when it answers, else an embedded redis-server), the database
schema, the web tier (gunicorn) on MIA_HOST:MIA_PORT and one miner ``gpu-0`` (and the
MQTT gateway when MIA_MQTT_URL is set: "up" only once its health check says it is
subscribed).

Its miner's key: ``make run`` holds the admin token. Before it starts ``gpu-0`` it
checks the key in the miner's key file (``<MIA_DATA_DIR>/miner-0.key``) against the
database. When the database has miner 0 with another key (a run with another
MIA_DATABASE_URL rewrote the file), with no key file, or revoked, it registers the
miner anew with the admin token, writes the new key to the file and says so in one
line; if that fails it stops at once and says what to do.

Supervision, once the stack is up: a miner or the gateway that exits is logged (which
one, its exit status, when it restarts) and started again after 1 s, doubling up to
30 s while it keeps exiting (back to 1 s once it has stayed up 60 s); the web tier
serves meanwhile. Redis or the web tier exiting stops the whole stack (status 1) with a
line saying which. Ctrl-C (or SIGTERM), also during a back-off wait or a restart, stops
everything it started at once, the last started first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType

import requests
from sqlalchemy.engine import make_url

from miners.heartbeat import keep_key, key_file, read_key
from scripts import redis_server
from scripts.launch import ROOT, answers_ok, gateway_argv, miner_argv, start, start_web
from scripts.processes import spawn, stop
from tasks.cluster import is_cluster
from tasks.connections import redis_client, redis_options
from tasks.sentinel import is_sentinel
from tasks.settings import Settings
from tasks.tokens import admin_token, registration_token

MINER = "0"  # make run's miner, on queue gpu-0
FIRST_WAIT_S, LONGEST_WAIT_S = 1.0, 30.0  # before restarting a child that exited
STEADY_S = 60.0  # a child up this long waits FIRST_WAIT_S again when it next exits
POLL_S = 0.5


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} make run: {line}", flush=True)


def exit_status(code: int) -> str:
    """``status 1`` or ``signal SIGKILL`` (Popen's returncode is -N for a signal)."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"status {code}"


def renew_own_key(settings: Settings, base: str, admin: str, miner_id: str = MINER) -> str:
    """Make sure miner ``miner_id`` can register with the key in its key file: when the
    database has that id with another key, none or revoked, register it anew with the
    admin token and keep the new key in the file. What it did ('' for nothing to do);
    RuntimeError, saying what to do, when it cannot."""
    from web.fleet.auth import key_standing  # the schema tools: imported when needed
    from web.fleet.db import make_engine, make_sessions

    path = key_file(settings, miner_id)
    engine = make_engine(settings.database_url)
    try:
        standing = key_standing(make_sessions(engine), miner_id, read_key(path))
    finally:
        engine.dispose()
    if standing in ("new", "current"):
        return ""
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    why = {
        "missing": f"there is no key file {path}",
        "stale": f"{path} holds another key (a run with another MIA_DATABASE_URL wrote it?)",
        "revoked": "it is revoked",
    }[standing]
    problem = f"miner {miner_id} is registered in {database} but {why}"
    if not admin:
        raise RuntimeError(
            f"{problem}, and without an admin token make run cannot renew its key: unset "
            f"MIA_ADMIN_TOKEN_FILE (make run then keeps one in var/admin-token) or set "
            f"MIA_ADMIN_TOKEN, or run with the MIA_DATABASE_URL whose run wrote {path}"
        )
    response = requests.post(
        f"{base}/register",
        json={"miner_id": miner_id, "kind": "push"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(
            f"{problem}, and registering it with the admin token answered "
            f"{response.status_code}: {response.text.strip()}. Run with the "
            f"MIA_DATABASE_URL whose run wrote {path}, or see docs/operations.md (make run)"
        )
    keep_key(path, response.json()["key"])
    done = "reinstated it" if standing == "revoked" else "renewed its key"
    return f"{problem}: {done} with the admin token and wrote the new key to {path}"


@dataclass
class Child:
    """A process the stack started; with ``argv``, supervised: restarted when it exits."""

    name: str
    proc: subprocess.Popen[bytes]
    argv: list[str] | None = None
    started: float = field(default_factory=time.monotonic)
    wait_s: float = FIRST_WAIT_S  # before its next restart
    restart_at: float | None = None  # set while it waits to be restarted


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = dict(os.environ)
        self.children: list[Child] = []
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
        admin = admin_token(self.settings, make=True)
        web_env = {**self.env, "MIA_ADMIN_TOKEN": admin}  # the web tier's, not the miners'
        self.children.append(Child("the web tier", start_web(self.settings, web_env, None)))
        note = renew_own_key(self.settings, base, admin)
        if note:
            say(note)
        heartbeat = partial(self._has_miner, base)
        argv = miner_argv(MINER)
        miner = start(argv, self.env, None, heartbeat, 180, "miner gpu-0 to heartbeat")
        self.children.append(Child("miner gpu-0", miner, argv))
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
        argv = gateway_argv()
        host, port = self.settings.mqtt_health_host, self.settings.mqtt_health_port
        if not port:  # no health endpoint to ask: started, not waited for
            self.children.append(Child("the MQTT gateway", spawn(argv, self.env, cwd=ROOT), argv))
            return
        health = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/healthz"
        subscribed = partial(answers_ok, health)
        gateway = start(argv, self.env, None, subscribed, 60, "the MQTT gateway")
        self.children.append(Child("the MQTT gateway", gateway, argv))
        print(f"MQTT gateway on {self.settings.mqtt_url}: subscribed ({health})", flush=True)

    def _redis(self) -> None:
        if is_sentinel(self.settings.redis_url):  # the operator's own Sentinel group
            redis_client(self.settings, socket_connect_timeout=2, socket_timeout=2).ping()
            print(f"Using the Redis master behind {self.settings.redis_url}", flush=True)
            return
        if is_cluster(self.settings.redis_url):  # the operator's own Redis Cluster
            redis_client(self.settings, socket_connect_timeout=2, socket_timeout=2).ping()
            print(f"Using the Redis Cluster at {self.settings.redis_url}", flush=True)
            return
        if redis_server.answers(self.settings.redis_url, **redis_options(self.settings)):
            print(f"Using Redis at {self.settings.redis_url}", flush=True)
            return
        port = self.settings.embedded_redis_port
        data = Path(self.settings.data_dir)
        print(f"No Redis at {self.settings.redis_url}; starting one on 127.0.0.1:{port}")
        redis = redis_server.start(port, data / "redis", data / "redis.log")
        self.children.append(Child("Redis", redis))
        self.env["MIA_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        self.settings = self.settings.with_overrides(redis_url=self.env["MIA_REDIS_URL"])

    def _has_miner(self, base: str) -> bool:
        for child in self.children:  # while starting, any exit stops the stack
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {exit_status(child.proc.returncode)}")
        try:
            miners = requests.get(f"{base}/metrics/gpus", timeout=2).json()["miners"]
        except requests.RequestException:  # the web tier is busy: ask again
            return False
        return any(m["miner_id"] == MINER and m["status"] != "offline" for m in miners)

    def wait(self) -> None:
        """Until a signal, supervising the children (see the module's docstring)."""
        while not self.stopping.wait(POLL_S):
            for child in self.children:
                self._supervise(child, time.monotonic())

    def _supervise(self, child: Child, now: float) -> None:
        if child.restart_at is None:
            code = child.proc.poll()
            if code is None:
                return
            if child.argv is None:
                raise RuntimeError(
                    f"{child.name} exited with {exit_status(code)}: stopping everything "
                    "(only a miner or the MQTT gateway is restarted)"
                )
            stop(child.proc)  # what is left of its process group
            if now - child.started >= STEADY_S:
                child.wait_s = FIRST_WAIT_S
            say(
                f"{child.name} exited with {exit_status(code)}; restarting it in {child.wait_s:g} s"
            )
            child.restart_at = now + child.wait_s
            child.wait_s = min(child.wait_s * 2, LONGEST_WAIT_S)
        elif now >= child.restart_at and child.argv:
            child.proc = spawn(child.argv, self.env, cwd=ROOT)
            child.started, child.restart_at = now, None
            say(f"{child.name} restarted (pid {child.proc.pid})")

    def stop(self) -> None:
        for child in reversed(self.children):
            print(f"stopping {child.name}", flush=True)
            stop(child.proc)


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
