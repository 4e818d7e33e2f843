"""Redis connections from the settings, TLS included: one way for every process.

A ``rediss://`` URL connects over TLS. ``MIA_REDIS_TLS_CA_FILE`` is the CA that signed
the server's certificate (else the system's), ``MIA_REDIS_TLS_CERT_FILE`` and
``MIA_REDIS_TLS_KEY_FILE`` a client certificate when the server asks for one, and
``MIA_REDIS_TLS_CERT_REQS`` (``required``, ``optional`` or ``none``) how strictly the
server's certificate is checked. The same options go to redis-py clients
(``redis_client``) and to Celery's broker and result backend (``celery_ssl``).

A ``sentinel://`` URL names Redis Sentinels instead (``tasks.sentinel``): every client
made here then talks to the master they name, and follows it through a failover.

``MIA_SESSIONS_REDIS_URL`` may move the state that grows with guests (sessions, their
turn locks, rate buckets) elsewhere; ``redis-cluster://[user:password@]host:port[,host:port...]``
(``rediss-cluster://`` over TLS) names a Redis Cluster by a few of its nodes
(``sessions_client``). Those keys' scripts declare every key, each in its own slot
(docs/scaling.md).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from tasks.cluster import ClusterURL, is_cluster, owner_pool_options
from tasks.errors import ConfigError
from tasks.keys import Keys
from tasks.sentinel import is_sentinel, sentinel_client
from tasks.settings import Settings

AnyRedis = redis.Redis | RedisCluster  # a client of one Redis (or Sentinel's master), or a Cluster

CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def uses_tls(url: str) -> bool:
    return urlsplit(url).scheme in ("rediss", "rediss-cluster")


def cert_reqs(settings: Settings) -> ssl.VerifyMode:
    try:
        return CERT_REQS[settings.redis_tls_cert_reqs.lower()]
    except KeyError:
        raise ConfigError(
            "MIA_REDIS_TLS_CERT_REQS must be one of required, optional, none, "
            f"got {settings.redis_tls_cert_reqs!r}"
        ) from None


def celery_ssl(settings: Settings) -> dict[str, Any] | None:
    """``broker_use_ssl`` / ``redis_backend_use_ssl`` for a ``rediss://`` URL, else None."""
    if not uses_tls(settings.redis_url):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": cert_reqs(settings)}
    for option, path in (
        ("ssl_ca_certs", settings.redis_tls_ca_file),
        ("ssl_certfile", settings.redis_tls_cert_file),
        ("ssl_keyfile", settings.redis_tls_key_file),
    ):
        if path:
            options[option] = path
    return options


def redis_options(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """redis-py's keyword arguments for TLS (none for a ``redis://`` URL)."""
    if not uses_tls(url or settings.redis_url):
        return {}
    return celery_ssl(settings.with_overrides(redis_url=url or settings.redis_url)) or {}


# Connections one process may open; more threads wait up to POOL_TIMEOUT_S for one.
# (redis-py's own pool fails at once with "Too many connections" past 100.)
MAX_CONNECTIONS = 256
POOL_TIMEOUT_S = 5.0


def redis_client(settings: Settings, url: str | None = None, **kwargs: Any) -> redis.Redis:
    """A client for ``url`` (default ``MIA_REDIS_URL``) with the TLS settings applied,
    on a blocking pool: a burst of threads queues for connections instead of failing.
    For a ``sentinel://`` URL, a client of the master the sentinels name."""
    target = url or settings.redis_url
    if is_sentinel(target):
        return sentinel_client(settings, target, MAX_CONNECTIONS, POOL_TIMEOUT_S, **kwargs)
    if is_cluster(target):  # the job path's slot: one node, followed (tasks.cluster)
        options = owner_pool_options(
            cluster_url(target), Keys(settings.key_prefix).tag, **redis_options(settings, target)
        )
        return redis.Redis(
            connection_pool=redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
                max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT_S, **options, **kwargs
            )
        )
    pool = redis.BlockingConnectionPool.from_url(
        target,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT_S,
        **redis_options(settings, target),
        **kwargs,
    )
    return redis.Redis(connection_pool=pool)


def cluster_url(url: str, variable: str = "MIA_REDIS_URL") -> ClusterURL:
    try:
        return ClusterURL.parse(url)
    except ValueError:
        raise ConfigError(
            f"{variable} must be redis-cluster://[user:password@]host:port[,host:port...],"
            f" got {url!r}"
        ) from None


def sessions_client(settings: Settings, main: redis.Redis, **kwargs: Any) -> AnyRedis:
    """The client of sessions, turn locks and rate buckets: ``main`` unless
    ``MIA_SESSIONS_REDIS_URL`` names another Redis, or a Redis Cluster (by default the
    one ``MIA_REDIS_URL`` names, if it does: they spread over its shards). A cluster is
    asked for its slots here, so it must answer when the process starts."""
    url = settings.sessions_redis_url
    if not url and is_cluster(settings.redis_url):
        url = settings.redis_url
    if not url:
        return main
    if is_sentinel(url):
        raise ConfigError(
            "MIA_SESSIONS_REDIS_URL cannot name Redis Sentinels: give the sessions a "
            "redis://, rediss:// or redis-cluster:// URL, or leave it empty (MIA_REDIS_URL)"
        )
    if not is_cluster(url):
        return redis_client(settings, url, **kwargs)
    cluster = cluster_url(url, "MIA_SESSIONS_REDIS_URL")
    tls = redis_options(settings, url)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in cluster.nodes],  # type: ignore[no-untyped-call]
        username=cluster.username,
        password=cluster.password,
        ssl=cluster.tls,
        **tls,
        **kwargs,
    )
