"""The measurements, each returning latencies in milliseconds."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from typing import cast

import redis
from celery import Celery

from bench import stock
from tasks.client import JobClient
from tasks.jobs import Job


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


def push_dispatch(jobs: JobClient, samples: int) -> list[float]:
    """This project's dispatch: job accepted -> miner task body start (``queue_ms``)."""
    out = []
    for i in range(samples):
        job = Job(messages=[{"role": "user", "content": f"bench {i}"}], max_tokens=8)
        result = jobs.run(job, timeout_s=10)
        out.append(float(result["timings"]["queue_ms"]))
    return out


def chat_round_trip(host: str, port: int, samples: int) -> list[float]:
    """``POST /chat/direct`` round trip over one keep-alive connection (echo engine)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    body = json.dumps({"message": "Hello", "max_tokens": 8})
    headers = {"content-type": "application/json"}
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        conn.request("POST", "/chat/direct", body, headers)
        response = conn.getresponse()
        payload = response.read()
        out.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"/chat/direct answered {response.status}: {payload!r}")
    conn.close()
    return out


def polling(client: redis.Redis, samples: int, period_s: float = 2.0) -> list[float]:
    """A legacy miner that polls every ``period_s``: jobs arrive at random moments."""
    key = "bench:poll"
    client.delete(key)
    got: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(period_s):
            while (item := client.lpop(key)) is not None:
                got.append((time.time() - float(cast(bytes, item))) * 1000)

    thread = threading.Thread(target=poll)
    thread.start()
    rng = random.Random(7)
    for _ in range(samples):
        time.sleep(rng.uniform(0, period_s))  # arrivals spread over the polling cycle
        client.rpush(key, repr(time.time()))
    _until(lambda: len(got) >= samples, period_s * 2 + 1)
    stop.set()
    thread.join()
    return got


def _until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
