"""For operators and orchestrators: ``/healthz`` (alive), ``/readyz`` (Redis answers),
``/metrics`` (Prometheus)."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisClusterException

from web.fleet.gauges import FleetCollector, exposition
from web.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@bp.get("/metrics")
def prometheus() -> ResponseReturnValue:
    svc = services()
    fleet = FleetCollector(svc.registry, svc.breakers)
    # content_type, not mimetype: Flask would add a second "; charset=utf-8"
    return Response(exposition(fleet), content_type=CONTENT_TYPE_LATEST)


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    svc = services()
    try:
        svc.redis.ping()
    except redis.RedisError as exc:
        return jsonify(status="unavailable", error=f"Redis does not answer: {exc}"), 503
    if svc.sessions_redis is not svc.redis:
        try:
            svc.sessions_redis.ping()
        except (redis.RedisError, RedisClusterException) as exc:
            error = f"the sessions' Redis (MIA_SESSIONS_REDIS_URL) does not answer: {exc}"
            return jsonify(status="unavailable", error=error), 503
    return jsonify(status="ready")
