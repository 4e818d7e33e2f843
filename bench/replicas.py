"""Results go to the replica that waits for them: messages per replica per request, and
requests/s, with 1 and with 4 web replicas on one Redis.

    python -m bench.replicas [--seconds 5] [--replicas 1 4]

One redis-server and two 8-slot echo miners; then, for each count R in turn, R web
replicas (gunicorn, one worker of 8 threads each) and R load generators
(``bench.load``) of 64/R clients, one per replica: what a load balancer spreading
evenly gives. Each replica counts what its reply channel delivered
(``mia_reply_messages_total`` on its ``/metrics``), so the bench reports the messages
each replica received per request it served (1: its result; before results were
routed, every replica heard every result: R). An observer subscribed to the channels
every replica used to share (``celery-task-meta-*``, ``<p>:stream:*``) counts what is
still published there (0 expected; on a tree from before the routing, the same script
shows what each replica's pattern subscription heard per request it served: R).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis as redis_lib
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.stack import TOKEN, echo_miner, environment, live_miners
from scripts import redis_server
from scripts.launch import ROOT, free_port, local_settings, start_web
from scripts.processes import stop, wait_for
from tasks.keys import Keys
from tasks.settings import Settings

CLIENTS = 64


def replies(base: str) -> float:
    """Every message this replica's reply channel delivered so far."""
    text = requests.get(f"{base}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mia_reply_messages_total"
    )


class Observer:
    """Counts messages on the channels every replica used to hear."""

    def __init__(self, client: redis_lib.Redis, keys: Keys) -> None:
        self.count = 0
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._pubsub.psubscribe(**{keys.result("*"): self, keys.stream("*"): self})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def __call__(self, message: dict[str, Any]) -> None:
        self.count += 1

    def close(self) -> None:
        self._thread.stop()


def run_load(ports: list[int], seconds: float) -> list[dict[str, Any]]:
    """One ``bench.load`` per replica, all at once; their JSON summaries."""
    argv = [sys.executable, "-m", "bench.load", "--clients", str(CLIENTS // len(ports))]
    argv += ["--seconds", str(seconds), "--warmup-s", "1"]
    procs = [
        subprocess.Popen([*argv, "--port", str(p)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for p in ports
    ]
    found = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        found.append(json.loads(out.strip().splitlines()[-1]))
    return found


def measure(
    settings: Settings, work: Path, count: int, seconds: float, observer: Observer
) -> dict[str, Any]:
    with ExitStack() as stack:
        bases, ports = [], []
        for i in range(count):
            port = free_port()
            own = settings.with_overrides(port=port, web_workers=1, web_threads=8)
            env = {**environment(own), "MIA_WEB_WORKERS": "1", "MIA_WEB_THREADS": "8"}
            stack.callback(stop, start_web(own, env, work / f"web-{count}-{i}.log"))
            bases.append(f"http://127.0.0.1:{port}")
            ports.append(port)
        before, shared = [replies(b) for b in bases], observer.count
        loads = run_load(ports, seconds)
        after, shared = [replies(b) for b in bases], observer.count - shared
    per_replica = [
        round((a - b) / max(load["sent"], 1), 3)
        for a, b, load in zip(after, before, loads, strict=True)
    ]
    return {
        "replicas": count,
        "req_per_s": round(sum(float(load["req_per_s"]) for load in loads), 1),
        "errors": sum(int(load["errors"]) for load in loads),
        "p50_ms": max(float(load["p50_ms"]) for load in loads),
        "messages_per_request_per_replica": per_replica,
        # what each replica's old pattern subscription heard per request it served
        "shared_channel_messages_per_request": round(
            shared * count / max(sum(load["sent"] for load in loads), 1), 3
        ),
    }


def run(counts: list[int], seconds: float) -> dict[str, Any]:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-replicas-{os.getpid()}"
    with ExitStack() as stack:
        redis_port = free_port()
        stack.callback(stop, redis_server.start(redis_port, work / "redis", work / "redis.log"))
        settings = local_settings(work, redis_port, TOKEN)
        first = settings.with_overrides(web_workers=1)
        stack.callback(stop, start_web(first, environment(first), work / "web-miners.log"))
        env = {**environment(settings), "MIA_SLOTS": "8"}
        for name in ("r-a", "r-b"):
            stack.callback(stop, echo_miner(name, env, work / f"{name}.log"))
        wait_for(lambda: live_miners(settings.api_url) == 2, 60, "the echo miners")
        client = redis_lib.Redis.from_url(settings.redis_url)
        observer = Observer(client, Keys(settings.key_prefix))
        stack.callback(observer.close)
        rows = [measure(settings, work, count, seconds, observer) for count in counts]
    return {"rows": rows, "broadcast_messages": observer.count}


def markdown(found: dict[str, Any]) -> str:
    lines = [
        "| web replicas | requests/s (64 clients) | p50 ms | errors "
        "| messages per request, each replica | on the shared channels, each |",
        "|---|---|---|---|---|---|",
    ]
    for row in found["rows"]:
        each = ", ".join(f"{m:g}" for m in row["messages_per_request_per_replica"])
        lines.append(
            f"| {row['replicas']} | {row['req_per_s']} | {row['p50_ms']} | {row['errors']} "
            f"| {each} | {row['shared_channel_messages_per_request']:g} |"
        )
    lines.append(
        f"\nMessages on the channels every replica used to hear: {found['broadcast_messages']}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    found = run(args.replicas, args.seconds)
    print(markdown(found))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
