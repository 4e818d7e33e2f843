"""Celery's formats on Redis, for the parts of this service that speak them directly.

The legacy path takes task messages off kombu's lists itself and stores results in
the result backend itself, and dispatch builds its task messages itself
(``tasks.broker.publish``), so each reads and writes exactly what Celery would.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from kombu.utils.json import dumps

from tasks.jobs import GENERATE, Job
from tasks.keys import queue_for

# What Celery's ``send_task`` puts in a message's body after the args and kwargs.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# The header that names the miner whose slot a job holds when ``reserve.lua`` published
# it (``tasks.broker.publish.Publisher.fused``): its body, base64, cannot be filled in.
RESERVED_HEADER = "mia_reserved"


def holding(
    payload: dict[str, Any], reserved: str | None, routing_key: str | None
) -> dict[str, Any]:
    """The job's payload with the slot it holds: its own ``reserved_on``, else the miner
    ``RESERVED_HEADER`` names while the message is on that miner's queue (a copy sent
    elsewhere, by a retry or the reaper, says in its body what it holds)."""
    if payload.get("reserved_on") or not reserved or routing_key != queue_for(reserved):
        return payload
    return {**payload, "reserved_on": reserved}


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


def argsrepr(job: Job) -> str:
    """How a job's task shows in Celery's listings and logs (never the whole prompt)."""
    return (
        f"(job={job.job_id}, model={job.model or '*'}, project={job.project or '-'}, "
        f"{job.preview()!r})"
    )


def task_message(
    job: Job, queue: str, priority: int, headers: dict[str, str], origin: str, reply_to: str
) -> dict[str, Any]:
    """``mia.generate`` for ``job`` as Celery's ``send_task`` hands it to kombu's Redis
    channel (protocol 2, JSON, base64 body; kombu adds nothing but the list it goes
    on): the same headers and properties, in the same order. ``origin`` and
    ``reply_to``: the app's node name and thread oid, as Celery fills them."""
    body = dumps([[job.to_payload()], {}, EMBED]).encode()  # type: ignore[no-untyped-call]
    shown = argsrepr(job)
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": GENERATE,
            "id": job.job_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": job.job_id,
            "parent_id": None,
            "argsrepr": shown,
            "kwargsrepr": "{}",
            "origin": origin,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            **headers,
        },
        "properties": {
            "correlation_id": job.job_id,
            "reply_to": reply_to,
            "kwargsrepr": "{}",
            "argsrepr": shown,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def rewritable(raw: bytes | str) -> bool:
    """Whether ``redeliver`` can change the job inside (it is plain JSON, not signed)."""
    return bool(json.loads(raw).get("content-type") == "application/json")


def task_id(raw: bytes | str) -> str | None:
    """The task id of any Celery message, or None if it is not one."""
    try:
        found = json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, str) else None


def priority(raw: bytes | str) -> int:
    """The kombu priority a message was published with (0 is served first)."""
    found = json.loads(raw).get("properties", {}).get("priority") or 0
    return int(found)


def redeliver(raw: bytes | str, queue: str, reserved_on: str | None) -> str:
    """The same ``mia.generate`` message for another queue: the slot it holds is
    ``reserved_on``'s, and the envelope is ``requeued``'s. A signed message
    (``MIA_MESSAGE_SIGNING``) keeps its body: only its envelope changes."""
    envelope = json.loads(raw)
    properties = envelope["properties"]
    if envelope.get("content-type") == "application/json":  # a signed body stays as it is
        encoded = properties.get("body_encoding") == "base64"
        body = base64.b64decode(envelope["body"]) if encoded else envelope["body"]
        args, kwargs, embed = json.loads(body)
        args[0]["reserved_on"] = reserved_on
        body = json.dumps([args, kwargs, embed])
        envelope["body"] = base64.b64encode(body.encode()).decode() if encoded else body
    return requeued(envelope, queue)


def requeued(message: bytes | str | dict[str, Any], queue: str) -> str:
    """A message, its job unchanged, for ``queue``: marked redelivered, with a delivery
    tag of its own (so the holder it was taken from can never acknowledge the copy)."""
    envelope = json.loads(message) if isinstance(message, (bytes, str)) else message
    envelope["headers"]["redelivered"] = True
    properties = envelope["properties"]
    properties["delivery_tag"] = str(uuid.uuid4())
    info = properties.setdefault("delivery_info", {})
    info.update(redelivered=True, exchange="", routing_key=queue)
    return json.dumps(envelope)


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
