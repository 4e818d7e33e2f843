"""Dispatch's publish (``tasks.broker.publish``): the message it builds by hand is the
one Celery's ``send_task`` writes, and only where that holds is it built by hand.
(The private APIs it relies on are pinned in ``tests/test_broker_pins.py``.)"""

from __future__ import annotations

import json

import redis as redis_lib
from celery import Celery

from tasks.broker.messages import argsrepr
from tasks.broker.publish import Publisher, builds_celerys_message
from tasks.celery_app import create_celery
from tasks.jobs import GENERATE
from tasks.keys import Keys
from tasks.settings import Settings
from tests.celery_fixtures import a_job

KEYS = Keys("mia")


def test_our_publish_writes_the_message_celerys_send_task_writes(
    celery_app: Celery, redis: redis_lib.Redis
) -> None:
    """Dispatch builds its message itself (``tasks.broker.publish``): field for field
    and in the same order, what Celery's ``send_task`` publishes for the same job, on
    the same priority step's list (its queue and delivery tag aside)."""
    job = a_job(request_id="rid-publish", reply_to="mia:reply:publish")
    headers = {"mia_reply": job.reply_to, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    Publisher(celery_app).send(job, "gpu-ours", 6, headers)
    celery_app.send_task(
        GENERATE,
        args=(job.to_payload(),),
        queue="gpu-celerys",
        task_id=job.job_id,
        priority=6,
        retry=False,
        declare=[],
        headers=headers,
        kwargsrepr="{}",
        argsrepr=argsrepr(job),
    )
    found = []
    for queue in ("gpu-ours", "gpu-celerys"):
        (raw,) = redis.lrange(KEYS.queue_list(queue, 6), 0, -1)
        message = json.loads(raw)
        assert message["properties"]["delivery_info"]["routing_key"] == queue
        message["properties"]["delivery_info"]["routing_key"] = "<queue>"
        message["properties"]["delivery_tag"] = "<tag>"
        found.append(json.dumps(message))  # the order of the keys counts
    assert found[0] == found[1], f"Celery's send_task wrote {found[1]}"


def test_only_a_configuration_that_publishes_that_message_is_published_by_hand(
    celery_app: Celery,
) -> None:
    assert builds_celerys_message(celery_app)
    for name, value in (
        ("task_serializer", "auth"),  # MIA_MESSAGE_SIGNING: a signed body
        ("task_protocol", 1),
        ("task_compression", "gzip"),
        ("task_routes", {"mia.generate": {"queue": "elsewhere"}}),
    ):
        other = create_celery("pins-other", Settings(redis_url="redis://127.0.0.1:1/0"))
        other.conf[name] = value
        assert not builds_celerys_message(other), name
