"""The Celery app, the web tier's and every miner's, and its configuration.

``celery_conf`` turns one process's MIA settings into Celery settings (``celeryconfig``
exposes the same as a Celery config module). Choices that matter for correctness:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged only
  after it ran, so a miner that dies mid-job leaves it to be redelivered.
- ``worker_prefetch_multiplier = 1``: a miner holds no more jobs than it runs.
- ``visibility_timeout`` longer than the longest job: Redis redelivers an
  unacknowledged job only after this long.
- ``queue_order_strategy = priority``: a miner drains its own ``gpu-<id>`` queue
  before ``shared`` instead of rotating between them.
- ``global_keyprefix`` (kombu's and Celery's result backend's): every queue, kombu's
  bookkeeping and every result live under the job path's hash tag, ``{<p>}:``, in the
  one slot of the service's own job keys (``tasks.keys``): the scripts that move a job
  between them need one slot on a Redis Cluster.
- ``result_backend_always_retry``: a miner that finishes a job while Redis is down
  keeps trying to store the result (up to about five minutes) instead of losing it.
- A ``sentinel://`` URL (``tasks.sentinel``): the broker and the result backend use
  their Sentinel variants, with ``master_name``; each result store waits for a replica
  (``wait_replicas``, ``tasks.replication``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from tasks.broker.backend import backend_url
from tasks.broker.transport import SENTINEL_TRANSPORT, TRANSPORT
from tasks.cluster import SlotOwner, is_cluster
from tasks.connections import celery_ssl, cluster_url, redis_options
from tasks.keys import Keys
from tasks.replication import wanted_replicas
from tasks.sentinel import SentinelURL, check, is_sentinel, sentinel_options
from tasks.settings import Settings
from tasks.signing import setup_signing, signing_config


def create_celery(
    main: str,
    settings: Settings | None = None,
    cls: type[Celery] = Celery,
    stock_transport: bool = False,
) -> Celery:
    """A Celery app configured for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    app = cls(main)
    app.conf.update(celery_conf(settings, stock_transport))
    setup_signing(app, settings)
    return app


def celery_conf(settings: Settings, stock_transport: bool = False) -> dict[str, Any]:
    """Celery settings (lower-case names) for one process's MIA settings.

    ``stock_transport`` keeps kombu's own Redis transport (the benchmark's baseline)
    instead of ``tasks.broker.transport``, which reuses Redis clients.
    """
    check(settings)
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "queue_order_strategy": "priority",
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": 25,
        "max_connections": 64,  # per process; more threads wait for one (tasks.broker.transport)
        "pool_timeout": max(settings.redis_timeout_s, 5.0),
    }
    backend_options: dict[str, Any] = {
        "socket_keepalive": True,
        "wait_replicas": wanted_replicas(settings),
        "wait_timeout_ms": settings.redis_wait_timeout_ms,
    }
    if not stock_transport:  # the job path's slot (tasks.keys; the stock bench: none)
        prefix = Keys(settings.key_prefix).broker_prefix
        transport["global_keyprefix"] = backend_options["global_keyprefix"] = prefix
        if is_cluster(settings.redis_url):  # connections follow that slot's owner
            transport["cluster_url"] = backend_options["cluster_url"] = settings.redis_url
    url = broker_url(settings)  # for a cluster, asked of it: once
    conf: dict[str, Any] = {
        "broker_url": url,
        "broker_transport": None if stock_transport else TRANSPORT,
        "result_backend": backend_url(url),
        "broker_transport_options": transport,
        "result_backend_transport_options": backend_options,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 300,
        "result_backend_base_sleep_between_retries_ms": 50,
        "result_backend_max_sleep_between_retries_ms": 1000,
        "redis_socket_connect_timeout": settings.redis_timeout_s,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.redis_timeout_s,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": "shared",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": max(settings.slots, 1),
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "result_expires": settings.result_ttl_s,
        "task_ignore_result": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "enable_utc": True,
    }
    if is_sentinel(settings.redis_url):
        sentinel = {
            "master_name": settings.redis_sentinel_master,
            "sentinel_kwargs": sentinel_options(settings),
        }
        transport.update(sentinel)
        backend_options.update(sentinel)
        conf["broker_transport"] = None if stock_transport else SENTINEL_TRANSPORT
    tls = celery_ssl(settings)
    if tls is not None:
        conf["broker_use_ssl"] = tls
        conf["redis_backend_use_ssl"] = tls
    conf.update(signing_config(settings))
    return conf


def broker_url(settings: Settings) -> str:
    """``MIA_REDIS_URL`` as kombu and Celery read it (a Sentinel list normalized; for a
    Redis Cluster, the node that owns the job path's slot now, asked here: kombu and the
    result backend follow it themselves, and tools that read the URL, such as Flower,
    find the queues there)."""
    if is_sentinel(settings.redis_url):
        return SentinelURL.parse(settings.redis_url).normalized()
    if is_cluster(settings.redis_url):
        cluster = cluster_url(settings.redis_url)
        owner = SlotOwner(cluster, Keys(settings.key_prefix).tag, **redis_options(settings))
        return cluster.node_url(*owner.address())
    return settings.redis_url
