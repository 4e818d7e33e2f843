"""The job: what the web tier publishes and what a miner gives back.

The task itself (``mia.generate``) is implemented in ``miners.tasks``; the web
tier publishes it by name, so it never imports miner or engine code.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

GENERATE = "mia.generate"
LOAD_MODEL = "mia.load_model"
UNLOAD_MODEL = "mia.unload_model"


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Job:
    """One generation request, as it travels in the task message."""

    messages: list[dict[str, str]]
    job_id: str = field(default_factory=new_job_id)
    model: str = ""
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # None: a different sample each time
    stop: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    stream: bool = False
    classifier: str = ""  # "lexical": a stage-1 job the miner answers without its engine
    project: str = ""
    device: str = ""  # only this miner may run it (/api/v2/models/process with device_id)
    priority: int = 0
    accepted_at: float = field(default_factory=time.time)
    reserved_on: str | None = None
    request_id: str = ""
    reply_to: str = ""  # the waiting web process's channel (<p>:reply:<replica>); "" none
    affinity: str = ""  # a session: its turns go where it ran last (tasks.dispatch); "" none

    def to_payload(self) -> dict[str, Any]:
        """The task's argument: plain JSON values, copied one level deep. (This runs
        on every request; ``dataclasses.asdict`` deep-copies and cost ten times more.)"""
        payload = {name: getattr(self, name) for name in PAYLOAD_FIELDS}
        payload["messages"] = [dict(m) for m in self.messages]
        payload["stop"] = list(self.stop)
        payload["choices"] = list(self.choices)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Job:
        """The job of a payload; fields a newer web tier added are ignored."""
        return cls(**{k: v for k, v in payload.items() if k in PAYLOAD_NAMES})

    def preview(self, chars: int = 40) -> str:
        """A short, safe description for logs and task listings."""
        text = self.messages[-1]["content"] if self.messages else ""
        return text[:chars]


PAYLOAD_FIELDS = tuple(f.name for f in fields(Job))
PAYLOAD_NAMES = frozenset(PAYLOAD_FIELDS)


def job_result(
    job: Job,
    miner_id: str,
    text: str,
    started_at: float,
    finished_at: float,
    model: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """The result a miner stores; the web tier adds ``total_ms``."""
    return {
        "job_id": job.job_id,
        "response": text,
        "miner_id": miner_id,
        "model": job.model or model,
        "timings": {
            "queue_ms": round((started_at - job.accepted_at) * 1000, 3),
            "inference_ms": round((finished_at - started_at) * 1000, 3),
        },
        **extra,
    }
