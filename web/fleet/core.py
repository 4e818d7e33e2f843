"""The fleet's core objects, wired one way for every caller: the web process
(``web.services``) and anyone else who dispatches and watches jobs (the bench)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from tasks.catalogue import Catalogue, load_catalogue
from tasks.celery_app import create_celery
from tasks.dispatch import Dispatcher
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.replication import Replicas
from tasks.selector import Affinity, RedisSelector
from tasks.settings import Settings
from web.fleet.recovery import Reaper
from web.fleet.registry import Registry
from web.fleet.results import ResultWaiter


@dataclass(frozen=True)
class Core:
    redis: redis.Redis
    keys: Keys
    scripts: Scripts
    celery: Celery
    catalogue: Catalogue
    selector: RedisSelector
    dispatcher: Dispatcher
    waiter: ResultWaiter  # a listener thread: ``waiter.close()`` when done
    registry: Registry
    reaper: Reaper


def build_core(settings: Settings, client: redis.Redis, main: str) -> Core:
    """The core objects on ``client``; ``main`` names the Celery app (web, bench)."""
    keys, scripts = Keys(settings.key_prefix), Scripts(client)
    affinity = Affinity(settings.session_ttl_s, settings.affinity_prompt_chars)
    selector = RedisSelector(
        client, scripts, keys, settings.result_ttl_s, affinity if settings.affinity else None
    )
    catalogue = load_catalogue(settings.catalogue_file)
    celery = create_celery(main, settings)
    models = set(catalogue.models)
    return Core(
        redis=client,
        keys=keys,
        scripts=scripts,
        celery=celery,
        catalogue=catalogue,
        selector=selector,
        dispatcher=Dispatcher(
            celery, selector, lambda: models, Replicas.from_settings(client, settings)
        ),
        waiter=ResultWaiter(client, keys, ready_timeout_s=settings.redis_timeout_s),
        registry=Registry(
            client, keys, settings.heartbeat_ttl_s, scripts, settings.offline_window_s
        ),
        reaper=Reaper(client, scripts, keys, settings, selector),
    )
