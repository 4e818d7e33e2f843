"""Redis Sentinel: the URL form, and clients that follow the master through a failover.

``MIA_REDIS_URL=sentinel://[:password@]host1:26379;sentinel://host2:26379;sentinel://host3:26379/<db>``
names the sentinels in kombu's own form (one ``sentinel://`` URL per sentinel, ``;``
between them) and ``MIA_REDIS_SENTINEL_MASTER`` the name they monitor the master under.
The password (and a user name, ``user:password@``) are the Redis servers', which every
replica of a Sentinel group shares; the sentinels themselves are asked without one.
Credentials and the database may be written on any one of the URLs (the first and the
last, as above).

kombu's broker and Celery's result backend take the database and the password from
the *first* URL alone: the broker would use database 0 while this process's own
clients used ``<db>``. ``SentinelURL.normalized`` writes both on every URL, and that
is the form ``tasks.celery_app`` hands them.

TLS to Redis (``rediss://``, ``MIA_REDIS_TLS_*``) is not supported with Sentinel: such
a configuration is refused at start (``check``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from tasks.errors import ConfigError
from tasks.settings import Settings

SCHEME = "sentinel"
DEFAULT_PORT = 26379


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names Redis Sentinels rather than one Redis server."""
    return url.split("://", 1)[0].lower() == SCHEME


@dataclass(frozen=True)
class SentinelURL:
    """The sentinels of one ``sentinel://`` URL list, and what to ask the master for."""

    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Read ``url`` (raises ConfigError, naming MIA_REDIS_URL, when it is not one)."""
        hosts: list[tuple[str, int]] = []
        found: dict[str, set[Any]] = {"db": set(), "credentials": set()}
        for chunk in (c.strip() for c in url.split(";")):
            if not chunk:
                continue
            host, port, db, credentials = _chunk(chunk)
            hosts.append((host, port))
            if db is not None:
                found["db"].add(db)
            if credentials != (None, None):
                found["credentials"].add(credentials)
        if not hosts:
            raise ConfigError(f"MIA_REDIS_URL names no sentinel: {url!r}")
        for what, values in found.items():
            if len(values) > 1:
                raise ConfigError(f"MIA_REDIS_URL: the sentinel URLs disagree on the {what}")
        username, password = next(iter(found["credentials"]), (None, None))
        return cls(tuple(hosts), next(iter(found["db"]), 0), username, password)

    def normalized(self) -> str:
        """The same sentinels, each URL with the credentials and the database (for kombu
        and Celery, which read them from the first URL only)."""
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(
            f"{SCHEME}://{auth}{_netloc(host)}:{port}/{self.db}" for host, port in self.hosts
        )

    def credentials(self) -> dict[str, Any]:
        """redis-py's keyword arguments for the master's connections."""
        found: dict[str, Any] = {"db": self.db}
        if self.username:
            found["username"] = self.username
        if self.password:
            found["password"] = self.password
        return found


def _chunk(chunk: str) -> tuple[str, int, int | None, tuple[str | None, str | None]]:
    parts = urlsplit(chunk)
    if parts.scheme.lower() != SCHEME or not parts.hostname:
        raise ConfigError(f"MIA_REDIS_URL: {chunk!r} is not sentinel://host[:port]")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError(f"MIA_REDIS_URL: bad port in {chunk!r}") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(f"MIA_REDIS_URL: the database must be a number, got {path!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, port, int(path) if path else None, (username, password)


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def check(settings: Settings) -> None:
    """Refuse, at start, what Sentinel does not support here: TLS and a nameless master."""
    if not is_sentinel(settings.redis_url):
        return
    SentinelURL.parse(settings.redis_url)
    tls = [
        name
        for name, value in (
            ("MIA_REDIS_TLS_CA_FILE", settings.redis_tls_ca_file),
            ("MIA_REDIS_TLS_CERT_FILE", settings.redis_tls_cert_file),
            ("MIA_REDIS_TLS_KEY_FILE", settings.redis_tls_key_file),
        )
        if value
    ]
    if tls:
        raise ConfigError(
            f"TLS to Redis is not supported with Sentinel (MIA_REDIS_URL is sentinel://), "
            f"but {', '.join(tls)} is set: unset it, or use a rediss:// URL without Sentinel"
        )
    if not settings.redis_sentinel_master:
        raise ConfigError("MIA_REDIS_SENTINEL_MASTER is empty: the sentinels' master name")


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """How the sentinels themselves are asked: within ``MIA_REDIS_TIMEOUT_S``, and a
    sentinel that does not answer is skipped at once for the next (redis-py's default
    retries each one three times with a backoff of seconds)."""
    timeout = settings.redis_timeout_s
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (connections go to whichever server the sentinels name
    master, and move when it changes) that waits, as ``BlockingConnectionPool`` does,
    for a free connection instead of failing with "Too many connections"."""


def sentinel_client(
    settings: Settings, url: str, max_connections: int, pool_timeout_s: float, **kwargs: Any
) -> redis.Redis:
    """A client of the master the sentinels of ``url`` name ``MIA_REDIS_SENTINEL_MASTER``."""
    check(settings.with_overrides(redis_url=url))
    target = SentinelURL.parse(url)
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts),
        sentinel_kwargs=sentinel_options(settings),
        **target.credentials(),
        **kwargs,
    )
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=pool_timeout_s,
    )
    return client


MASTER_CHECK_S = 2.0  # how often a long-lived subscriber asks where the master is


def ensure_on_master(client: redis.Redis, pubsub: redis.client.PubSub) -> None:
    """For a subscriber of ``client``: raise ConnectionError when its connection is no
    longer on the master the sentinels name. A master demoted while it stays up (a
    manual failover, a partition) keeps its subscribers connected, but publishers have
    moved to the new one; the caller subscribes again, which reaches the new master.
    Nothing to do without Sentinel."""
    where = getattr(client.connection_pool, "get_master_address", None)
    connection = pubsub.connection
    if where is None or connection is None:
        return
    master = where()
    if master is not None and (connection.host, int(connection.port)) != (
        master[0],
        int(master[1]),
    ):
        raise redis.ConnectionError(
            f"subscribed on {connection.host}:{connection.port}, which is no longer the "
            f"master ({master[0]}:{master[1]} is)"
        )
