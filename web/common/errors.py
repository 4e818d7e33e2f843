"""One place that turns errors into JSON responses with the right status.

Every error is first read as a ``MiaError`` (``as_mia_error``: ours as they are, an
HTTP error, Redis or the broker down, the database down, anything else), then drawn
in the shape its caller speaks: this service's ``{"error", "code", ...}``, or, under
``/v1/``, OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from kombu.exceptions import OperationalError
from redis.exceptions import RedisClusterException
from sqlalchemy.exc import OperationalError as DatabaseError
from werkzeug.exceptions import HTTPException

from tasks.errors import MiaError
from web.common.validation import describe

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1/"


def _error(status: int, code: str, message: str, **details: Any) -> MiaError:
    exc = MiaError(message, **details)
    exc.status, exc.code = status, code
    return exc


def as_mia_error(exc: Exception) -> MiaError:
    """``exc`` as the MiaError it is answered with (status, code, message, details)."""
    if isinstance(exc, MiaError):
        return exc
    if isinstance(exc, HTTPException):
        code = exc.name.lower().replace(" ", "_")
        field = {"field": "body"} if exc.code == 413 else {}  # over MAX_CONTENT_LENGTH
        return _error(exc.code or 500, code, describe(exc), **field)
    if isinstance(exc, redis.RedisError | RedisClusterException | OperationalError):
        log.warning("Redis unavailable: %s", exc)
        return _error(503, "unavailable", f"Redis does not answer: {exc}")
    if isinstance(exc, DatabaseError):
        log.warning("database unavailable: %s", exc)
        return _error(503, "unavailable", "the database does not answer")
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal_error", "internal error")


def openai_body(exc: MiaError) -> dict[str, Any]:
    """OpenAI's error object for ``exc``."""
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    param = exc.details.get("field")
    return {"error": {"message": exc.message, "type": kind, "param": param, "code": exc.code}}


def render(exc: Exception) -> tuple[Response, int]:
    """The response for ``exc``, in the shape the request's endpoint speaks."""
    error = as_mia_error(exc)
    body = openai_body(error) if request.path.startswith(OPENAI_PREFIX) else error.to_dict()
    return jsonify(body), error.status


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Exception, render)
