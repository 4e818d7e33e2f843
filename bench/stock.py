"""Stock Celery, for comparison: the same broker and worker settings, no routing, no Lua.

    celery -A bench.stock worker -Q stock

The task only records how long after ``sent_at`` its body started.
"""

from __future__ import annotations

import time

import redis
from celery import Celery

from tasks.celery_app import create_celery
from tasks.settings import Settings

QUEUE = "stock"
TASK = "bench.stock.ping"
LATENCIES = "bench:stock:latency"

settings = Settings.from_env()
app: Celery = create_celery("stock", settings, stock_transport=True)
_redis = redis.Redis.from_url(settings.redis_url)


@app.task(name=TASK, ignore_result=True)
def ping(sent_at: float) -> None:
    started = time.time()
    _redis.rpush(LATENCIES, (started - sent_at) * 1000)
