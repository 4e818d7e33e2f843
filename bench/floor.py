"""The stock stack's two frameworks alone: what a Flask + Celery round trip takes at least.

The stock stack's ``POST /chat/direct`` (``bench.naive``) is a front door (the connect,
gunicorn gthread, Flask, the body parsed, the answer written) around a Celery round
trip (the task's message pushed, the solo worker's ``BRPOP``, its delivery
bookkeeping, the task, its result stored and published, the caller hearing it).
``bench.versus`` measures each half alone on the stock stack's own processes,
interleaved with the two stacks' round trips:

- ``front door``: ``POST /chat/none`` on the stock web tier, a new connection each: the
  same view without Celery; and the same app under granian (``front door, granian``),
  the fastest WSGI server the bench has, which cannot serve the product's WebSocket
  (``bench.serving``): the front door at its cheapest;
- ``celery``: from the bench's own process, with no Celery client code: the message
  ``apply_async`` writes for ``bench.naive.echo``, captured once and its ids filled in
  each time, one ``LPUSH``, and the result's ``PUBLISH`` heard on a pattern
  subscription made once.

Added round by round (``added``), they are the stock configuration of the two
frameworks with nothing else on the path. The product has both on its path, one after
the other; its miners take two of the stock worker's round trips off the Celery half
(the delivery's MULTI, overlapped: ``tasks.broker.qos``; the result stored in one
script, where Celery's backend reads the task's state before it writes:
``tasks.broker.backend``), so its own floor is lower by those two.

Under load the same split holds for CPU (``cpu``): 64 keep-alive clients on
``/chat/none`` give the front door's CPU per request, beside the stock worker's in
the stock stack's load.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench import naive
from scripts.launch import answers_ok, free_port, granian_argv, scrubbed_environ, start
from scripts.processes import stop

RESULTS = "celery-task-meta-"  # the Redis result backend's keys and channels
TIMEOUT_S = 10.0
PATH = "/chat/none"  # ``bench.naive``'s view without Celery
# The sides ``bench.versus`` measures for this, and the floors added from them.
FRONT_DOOR = "front door"
GRANIAN = "front door, granian"
CELERY = "celery"
FLOORS = {"floor": FRONT_DOOR, "floor, granian": GRANIAN}


def added(latency: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each floor's samples: a front door's and the Celery half's of the same round,
    added (for the front doors measured)."""
    return {
        floor: [a + b for a, b in zip(latency[front], latency[CELERY], strict=True)]
        for floor, front in FLOORS.items()
        if front in latency
    }


def lowest(ratios: dict[str, float]) -> float:
    """The floor over the stock stack, p50, with the cheaper front door measured."""
    return min(ratios[f"{floor}_p50"] for floor in FLOORS if f"{floor}_p50" in ratios)


def cpu(tp: dict[str, Any]) -> dict[str, float]:
    """CPU ms per request of the frameworks alone (the front door's web tier and the
    stock worker; at least, since Celery's client and Redis are left out), and what
    the product may spend in all at 1.5x the stock stack's requests/s (on cores both
    keep busy, requests/s goes as the inverse of CPU per request)."""
    front = tp[FRONT_DOOR]["cpu_ms_per_request"]["web"]
    worker = tp["stock"]["cpu_ms_per_request"]["miner / worker"]
    return {
        "front_door_web": front,
        "stock_worker": worker,
        "frameworks": round(front + worker, 3),
        "product_budget_at_1.5x": round(tp["stock"]["cpu_ms_per_request"]["all"] / 1.5, 3),
    }


@contextmanager
def granian_front_door(url: str, work: Path) -> Iterator[int | None]:
    """``bench.naive``'s app under granian 2 x 8 (as the stock stack's gunicorn); its
    port, or None where granian is not installed."""
    if importlib.util.find_spec("granian") is None:
        yield None
        return
    port = free_port()
    env = {**scrubbed_environ(), "NAIVE_REDIS_URL": url}
    ready = partial(answers_ok, f"http://127.0.0.1:{port}/healthz")
    argv = granian_argv(port, "bench.naive:create_app", 2, 8)
    proc = start(argv, env, work / "naive-granian.log", ready, 30, "the front door on granian")
    try:
        yield port
    finally:
        stop(proc)


def captured(url: str) -> dict[str, Any]:
    """The message stock ``apply_async`` pushes for ``bench.naive.echo("Hello")``,
    taken off a queue no worker reads."""
    app = naive.make_celery(url)
    hold = f"naive-floor-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(url)
    try:
        app.send_task("bench.naive.echo", ("Hello",), queue=hold, ignore_result=True)
        raw = client.rpop(hold)
        if not isinstance(raw, bytes):
            raise RuntimeError(f"apply_async left nothing on {hold}")
        return dict(json.loads(raw))
    finally:
        for key in client.scan_iter(match=f"*{hold}*"):  # kombu's bindings of it
            client.delete(key)
        client.close()
        app.close()


class CeleryRoundTrip:
    """Echo tasks through the stock worker with the client's side at its least."""

    def __init__(self, url: str) -> None:
        self.template = captured(url)
        self.template["headers"]["ignore_result"] = False
        self.template["properties"]["delivery_info"]["routing_key"] = naive.QUEUE
        self.redis = redis.Redis.from_url(url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            self.pubsub.psubscribe(f"{RESULTS}*")
        except redis.RedisError:
            self.close()
            raise

    def message(self, task_id: str) -> str:
        """The captured message as ``apply_async`` would write it for ``task_id``."""
        message = copy.deepcopy(self.template)
        message["headers"].update(id=task_id, root_id=task_id)
        message["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
        return json.dumps(message)

    def __call__(self) -> float:
        """One task: ms from its message built to its result heard. Results published
        before it (every ``celery-task-meta-*`` on the server, the stock stack's too)
        are read off first, outside the time."""
        while self.pubsub.get_message(timeout=0) is not None:
            pass
        started = time.perf_counter()
        task_id = str(uuid.uuid4())
        self.redis.lpush(naive.QUEUE, self.message(task_id))
        channel = f"{RESULTS}{task_id}".encode()
        deadline = started + TIMEOUT_S
        while (left := deadline - time.perf_counter()) > 0:
            heard = self.pubsub.get_message(timeout=left)
            if heard is not None and heard["channel"] == channel:
                return (time.perf_counter() - started) * 1000
        raise RuntimeError(f"no result for {task_id} in {TIMEOUT_S} s")

    def close(self) -> None:
        self.pubsub.close()
        self.redis.close()

    def __enter__(self) -> CeleryRoundTrip:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
