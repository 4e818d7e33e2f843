"""Celery's formats on Redis, for the parts of this service that speak them directly.

The legacy path takes task messages off kombu's lists itself and stores results in
the result backend itself, so it reads and writes exactly what Celery would.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from tasks.jobs import GENERATE, Job


class BadMessage(ValueError):
    """A message on ``shared`` that is not an ``mia.generate`` task this tier can read."""


def decode_message(raw: bytes | str) -> Job:
    """The job inside a kombu message as Celery publishes ``mia.generate`` on Redis."""
    try:
        envelope = json.loads(raw)
        headers = envelope["headers"]
        if headers.get("task") != GENERATE:
            raise BadMessage(f"task {headers.get('task')!r} is not {GENERATE}")
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if envelope.get("content-type") != "application/json":
            raise BadMessage(f"content type {envelope.get('content-type')!r} is not JSON")
        args, _kwargs, _embed = json.loads(body)
        return Job.from_payload(args[0])
    except BadMessage:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadMessage(f"unreadable task message: {exc!r}") from exc


def celery_meta(job_id: str, status: str, result: Any) -> str:
    """A result in the format Celery's Redis backend stores (what ResultWaiter reads)."""
    return json.dumps(
        {
            "status": status,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": datetime.now(UTC).isoformat(),
            "task_id": job_id,
        }
    )


def failure_meta(job_id: str, message: str) -> str:
    exc = {"exc_type": "RuntimeError", "exc_module": "builtins", "exc_message": [message]}
    return celery_meta(job_id, "FAILURE", exc)
