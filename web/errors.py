"""One place that turns errors into JSON responses with the right status."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify, request
from kombu.exceptions import OperationalError
from sqlalchemy.exc import OperationalError as DatabaseError
from werkzeug.exceptions import HTTPException

from tasks.errors import MiaError
from web.openai import openai_http_error
from web.validation import describe

log = logging.getLogger(__name__)


def _json(status: int, **body: object) -> tuple[Response, int]:
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(MiaError)
    def mia_error(exc: MiaError) -> tuple[Response, int]:
        return _json(exc.status, **exc.to_dict())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        if request.path.startswith("/v1/"):  # no route matched: no blueprint handler ran
            return openai_http_error(exc)
        body: dict[str, object] = {
            "error": describe(exc),
            "code": exc.name.lower().replace(" ", "_"),
        }
        if exc.code == 413:
            body["field"] = "body"  # over MAX_CONTENT_LENGTH: the body as a whole
        return _json(exc.code or 500, **body)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def broker_down(exc: Exception) -> tuple[Response, int]:
        log.warning("Redis unavailable: %s", exc)
        return _json(503, error=f"Redis does not answer: {exc}", code="unavailable")

    @app.errorhandler(DatabaseError)
    def database_down(exc: Exception) -> tuple[Response, int]:
        log.warning("database unavailable: %s", exc)
        return _json(503, error="the database does not answer", code="unavailable")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return _json(500, error="internal error", code="internal_error")
