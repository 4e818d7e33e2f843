"""The stock stack: what a user would write without this product, the bench's baseline.

    NAIVE_REDIS_URL=redis://127.0.0.1:6379/1 \\
        gunicorn -w 2 -k gthread --threads 8 'bench.naive:create_app()'
    NAIVE_REDIS_URL=... celery -A bench.naive worker -P solo -Q naive

One Flask view that publishes a no-op Celery task with ``apply_async(queue=...)`` and
waits for it with ``.get()``; a solo-pool worker; ``acks_late`` and prefetch 1, as the
product's miners have; stock Celery and kombu (the project's pinned versions), the
Redis result backend. Nothing of the product is imported: no slots, no routing, no
metrics, no request ids, no tracing, no logs per request.

``POST /chat/none`` is the same view without Celery (the body parsed, the answer built):
the front door's own share of a round trip, for ``bench.floor``.
"""

from __future__ import annotations

import os
import uuid

from celery import Celery
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

QUEUE = "naive"
TIMEOUT_S = 10.0


def make_celery(url: str) -> Celery:
    """Broker and result backend on ``url``; late acks, one message prefetched."""
    celery = Celery("naive", broker=url, backend=url)
    celery.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )
    return celery


# A module-level app, as ``celery -A`` finds it and as the Celery docs write it.
celery = make_celery(os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/1"))


@celery.task(name="bench.naive.echo")
def echo(message: str) -> str:
    """The no-op: the message back, as the product's echo engine at 0 ms."""
    return message


def create_app() -> Flask:
    """``POST /chat/direct`` (``{"message": ...}``) answered with the task's result."""
    app = Flask(__name__)

    @app.post("/chat/direct")
    def direct() -> ResponseReturnValue:
        message = str((request.get_json(silent=True) or {}).get("message", ""))
        result = echo.apply_async((message,), queue=QUEUE)
        return jsonify(response=result.get(timeout=TIMEOUT_S), job_id=result.id)

    @app.post("/chat/none")
    def front_door() -> ResponseReturnValue:
        message = str((request.get_json(silent=True) or {}).get("message", ""))
        return jsonify(response=message, job_id=str(uuid.uuid4()))

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    return app
