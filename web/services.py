"""The objects one web process shares between requests, built once by the app factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis
from celery import Celery
from flask import Flask, current_app

from chat_service.assistant import Assistant
from chat_service.projects import load_projects
from chat_service.sessions import SessionStore
from chat_service.store import Store
from chat_service.tokens import counter
from tasks.breaker import Breakers
from tasks.connections import AnyRedis, redis_client, sessions_client
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.settings import Settings
from tasks.tokens import admin_token
from web.fleet.audit import AuditLog
from web.fleet.auth import MinerAuth
from web.fleet.client import JobClient
from web.fleet.core import build_core
from web.fleet.db import make_engine, make_sessions
from web.fleet.housekeeping import Housekeeper
from web.fleet.leases import LeaseBook
from web.fleet.once import Once
from web.fleet.operations import Operations
from web.fleet.placement import ModelManager
from web.fleet.pollers import Pollers
from web.fleet.recovery import Reaper
from web.fleet.registry import Registry
from web.fleet.results import ResultWaiter
from web.fleet.watchdog import Watchdog

EXTENSION = "mia"


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    sessions_redis: AnyRedis  # sessions, turn locks, rate buckets (MIA_SESSIONS_REDIS_URL)
    celery: Celery
    registry: Registry
    auth: MinerAuth
    jobs: JobClient
    waiter: ResultWaiter
    leases: LeaseBook
    pollers: Pollers  # legacy miners: last polls, stops
    housekeeper: Housekeeper
    assistant: Assistant
    models: ModelManager
    keys: Keys
    stats: Watchdog
    reaper: Reaper
    breakers: Breakers
    audit: AuditLog
    ignored: Once  # which sets of unknown fields the legacy endpoints logged


def build_services(settings: Settings) -> Services:
    client = redis_client(
        settings,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=max(settings.redis_timeout_s, 5.0),
        socket_keepalive=True,
        health_check_interval=30,
    )
    core = build_core(settings, client, "web")
    keys, scripts, celery, waiter = core.keys, core.scripts, core.celery, core.waiter
    registry, catalogue, dispatcher = core.registry, core.catalogue, core.dispatcher
    sessions = make_sessions(make_engine(settings.database_url))
    operations = Operations(client, keys, registry, waiter, settings.result_ttl_s)
    models = ModelManager(registry, catalogue, celery, operations)
    leases = LeaseBook(client, scripts, keys, settings)
    audit = AuditLog(sessions)
    autoload = audited_autoload(models, audit) if settings.autoload else None
    stats = Watchdog(client, keys, settings.alert_webhook, bool(settings.auto_drain))
    breakers = Breakers(client, scripts, keys, settings)
    jobs = JobClient(
        client, keys, dispatcher, waiter, autoload=autoload, stats=stats, breakers=breakers
    )
    reaper = core.reaper
    guests = sessions_client(
        settings,
        client,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=max(settings.redis_timeout_s, 5.0),
    )
    assistant = Assistant(
        load_projects(Path(settings.projects_file) if settings.projects_file else None),
        jobs,
        SessionStore(
            guests,
            scripts if guests is client else Scripts(guests),
            keys,
            counter(),
            settings.session_ttl_s,
            settings.max_sessions,
        ),
        Store(sessions),
        settings.request_timeout_s,
        max_tokens=settings.max_tokens,
    )
    return Services(
        settings=settings,
        redis=client,
        sessions_redis=guests,
        celery=celery,
        registry=registry,
        auth=MinerAuth(
            sessions,
            client,
            keys,
            settings.registration_token,
            admin_token(settings),
            bool(settings.legacy_open_renewal),
        ),
        audit=audit,
        jobs=jobs,
        waiter=waiter,
        leases=leases,
        pollers=Pollers(client, keys, settings),
        housekeeper=Housekeeper(
            (leases.sweep, registry.reap, reaper, stats.housekeeping), leases.sweep_period_s()
        ),
        assistant=assistant,
        models=models,
        keys=keys,
        stats=stats,
        reaper=reaper,
        breakers=breakers,
        ignored=Once(client, keys.ignored),
    )


def audited_autoload(models: ModelManager, audit: AuditLog) -> Callable[[str, float], None]:
    """MIA_AUTOLOAD's loads, recorded in the audit log like an operator's."""

    def autoload(model_id: str, timeout_s: float) -> None:
        audit.record("autoload", "model_load", model_id)
        models.load_and_wait(model_id, timeout_s)

    return autoload


def init_app(app: Flask, settings: Settings) -> Services:
    services = build_services(settings)
    app.extensions[EXTENSION] = services
    # Every request keeps this process's housekeeping thread alive (a no-op once started).
    app.before_request(services.housekeeper.ensure_running)
    app.extensions["celery"] = services.celery
    return services


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return cast(Services, current_app.extensions[EXTENSION])
