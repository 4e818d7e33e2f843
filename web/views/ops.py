"""For operators and orchestrators: ``/healthz`` (alive), ``/readyz`` (Redis answers),
``/metrics`` (Prometheus)."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

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
    try:
        services().redis.ping()
    except redis.RedisError as exc:
        return jsonify(status="unavailable", error=f"Redis does not answer: {exc}"), 503
    return jsonify(status="ready")
