"""Helpers for the bad-input tests: bodies sent as written, the field an error names,
and the check that nothing was enqueued."""

from __future__ import annotations

# What a published, reserved, leased or stored job leaves in Redis (tasks/keys.py).
JOB_TRACES = (
    "{mia}:job:*",
    "celery-task-meta-*",
    "shared*",
    "gpu-*",
    "{mia}:lease*",
    "{mia}:attempts:*",
    "{mia}:running:*",
    "{mia}:shared:*",
    "mia:session:*",
    "{mia}:hb:*",
    "{mia}:loading:*",
)


def raw(text: str) -> dict[str, object]:
    """A body sent exactly as written (NaN, lone surrogate escapes, deep nesting...)."""
    return {"data": text.encode(), "content_type": "application/json"}


def named_field(response) -> str:
    """The field an error names, in our shape or OpenAI's (under /v1)."""
    body = response.get_json()
    assert isinstance(body, dict), response.data
    if isinstance(body.get("error"), dict):
        assert body["error"]["message"]
        return str(body["error"]["param"])
    assert body["error"] and body["code"]
    return str(body["field"])


def assert_nothing_enqueued(redis) -> None:
    """No job record, queue, wake token, lease, result, session or heartbeat."""
    found = [key for pattern in JOB_TRACES for key in redis.keys(pattern)]
    assert found == [], f"bad input left job traces: {found}"
