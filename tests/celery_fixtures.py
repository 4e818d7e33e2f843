"""What the tests of Celery's and kombu's private parts share (``test_broker_pins``,
``test_celery_formats``, ``test_publish``): the service's Celery app as a fixture
(loaded as a plugin by ``tests/conftest.py``), a job, a selector with no miner free,
the failure message that names a changed private API, and jobs sent as retries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from tasks.celery_app import create_celery
from tasks.dispatch import Dispatcher
from tasks.jobs import Job
from tasks.settings import Settings


@pytest.fixture
def celery_app(settings: Settings, redis: redis_lib.Redis) -> Iterator[Celery]:
    """The service's Celery app (our transport and result backend) on the flushed test
    Redis."""
    app = create_celery("pins", settings)
    try:
        yield app
    finally:
        app.close()


def changed(api: str, what: str) -> str:
    """The failure message: which private API, what changed, and what to do."""
    return (
        f"{api}: {what}. The installed Celery/kombu behave differently under "
        "tasks/broker: re-check it against the new version (the list is in "
        "tasks/broker/__init__.py)"
    )


def a_job(**extra: Any) -> Job:
    """A job with a non-ASCII message and every option a message carries set."""
    fields: dict[str, Any] = {"model": "m", "stop": ["\n"], "seed": 7, "priority": 3}
    fields["request_id"] = "rid-pins"
    return Job(messages=[{"role": "user", "content": "héllo \u2603"}], **{**fields, **extra})


def only(values: list[bytes]) -> bytes:
    assert len(values) == 1, values
    return values[0]


class NoMiner:
    """A selector with no miner free: dispatch publishes on ``shared``."""

    def choose(self, job: Job, shared_only: bool = False, exclude: str = "") -> str | None:
        return None

    def release(self, miner_id: str) -> None:
        return None

    def wake_shared(self, job_id: str) -> None:
        return None


def send_as_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on this process dispatches each job as a retry (``retries: 1`` in its
    headers, as ``miners.retry`` sends one), which a miner runs as a re-run: it claims
    the answer so far before its engine starts (``miners.resume``)."""
    headers = Dispatcher._headers
    retry = staticmethod(lambda job: {**headers(job), "retries": 1})
    monkeypatch.setattr(Dispatcher, "_headers", retry)
