"""The measurements, each returning latencies in milliseconds."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from typing import Any

import redis
from celery import Celery

from bench import stock
from tasks.jobs import Job
from web.fleet.client import JobClient


def redis_floor(client: redis.Redis, url: str, samples: int) -> list[float]:
    """LPUSH here -> BRPOP on another connection in another thread: what Redis itself costs."""
    key = "bench:floor"
    got: list[float] = []
    arrived = threading.Event()
    consumer = redis.Redis.from_url(url)

    def consume() -> None:
        for _ in range(samples):
            item = consumer.brpop([key], timeout=10)
            if item is None:
                return
            got.append((time.time() - float(item[1])) * 1000)
            arrived.set()

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(samples):
        arrived.clear()
        client.lpush(key, repr(time.time()))
        if not arrived.wait(10):
            break
    thread.join()
    consumer.close()
    return got


def stock_celery(celery: Celery, client: redis.Redis, samples: int) -> list[float]:
    """Stock Celery publish -> task body start, one at a time (no routing, no Lua)."""
    client.delete(stock.LATENCIES)
    out: list[float] = []
    for _ in range(samples):
        celery.send_task(stock.TASK, (time.time(),), queue=stock.QUEUE)
        item = client.blpop([stock.LATENCIES], timeout=10)
        if item is None:
            raise RuntimeError("the stock Celery worker did not answer")
        out.append(float(item[1]))
    return out


# A system prompt long enough to be a dispatch affinity (MIA_AFFINITY_PROMPT_CHARS)
LONG_SYSTEM = "You answer questions about the bench's restaurant, briefly. " * 20


def push_dispatch(jobs: JobClient, samples: int, affinity: str = "") -> list[float]:
    """This project's dispatch: job accepted -> miner task body start (``queue_ms``).
    ``affinity``: "session", each job a turn of one session; "prompt", each with the
    same long system prompt (dispatch then prefers the miner that ran them last)."""
    out = []
    head = [{"role": "system", "content": LONG_SYSTEM}] if affinity == "prompt" else []
    session = "bench-session" if affinity == "session" else ""
    for i in range(samples):
        messages = [*head, {"role": "user", "content": f"bench {i}"}]
        job = Job(messages=messages, max_tokens=8, affinity=session)
        result = jobs.run(job, timeout_s=10)
        out.append(float(result["timings"]["queue_ms"]))
    return out


def round_trips(
    host: str,
    port: int,
    request: tuple[str, str, str | None, dict[str, str]],
    expect: int,
    samples: int,
) -> list[float]:
    """HTTP round trips of one ``(method, path, body, headers)`` over a keep-alive connection."""
    method, path, body, headers = request
    conn = http.client.HTTPConnection(host, port, timeout=10)
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        payload = response.read()
        out.append((time.perf_counter() - started) * 1000)
        if response.status != expect:
            raise RuntimeError(f"{method} {path} answered {response.status}: {payload!r}")
    conn.close()
    return out


def post_json(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` as JSON on ``conn``; the JSON answer (RuntimeError unless 200)."""
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {payload!r}")
    answer: dict[str, Any] = json.loads(payload)
    return answer


def chat_round_trip(host: str, port: int, samples: int) -> list[float]:
    """``POST /chat/direct`` round trip (echo engine)."""
    body = json.dumps({"message": "Hello", "max_tokens": 8})
    headers = {"content-type": "application/json"}
    return round_trips(host, port, ("POST", "/chat/direct", body, headers), 200, samples)


def empty_poll(host: str, port: int, key: str, samples: int) -> list[float]:
    """``GET /get_work`` round trip with nothing queued (the 204 an idle old miner sees)."""
    headers = {"Authorization": f"Bearer {key}"}
    return round_trips(host, port, ("GET", "/get_work", None, headers), 204, samples)


def legacy_pickup(jobs: JobClient, samples: int, spread_s: float, seed: int = 7) -> list[float]:
    """Job accepted -> leased to a real legacy miner (``queue_ms``), no push miner alive.

    Jobs arrive at random moments spread over ``spread_s`` (the polling period), one
    at a time, so each waits for whatever is left of the miner's polling cycle.
    """
    rng = random.Random(seed)
    out = []
    for i in range(samples):
        if spread_s:
            time.sleep(rng.uniform(0, spread_s))  # the arrival moment, not a wait for a result
        job = Job(messages=[{"role": "user", "content": f"legacy {i}"}], max_tokens=8)
        result = jobs.run(job, timeout_s=spread_s + 30)
        out.append(float(result["timings"]["queue_ms"]))
    return out
