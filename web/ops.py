"""Probes for operators and orchestrators: ``/healthz`` (alive), ``/readyz`` (Redis answers)."""

from __future__ import annotations

import redis
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from web.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        services().redis.ping()
    except redis.RedisError as exc:
        return jsonify(status="unavailable", error=f"Redis does not answer: {exc}"), 503
    return jsonify(status="ready")
