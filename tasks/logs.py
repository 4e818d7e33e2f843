"""Logs: one JSON line per event, each carrying the request id that caused it.

The web tier takes a request's id from ``X-Request-ID`` (or makes one), returns it
in the response header and puts it in every job it publishes; the miner sets it
for the duration of the job (Celery's task_prerun/postrun), so one
``grep <request id>`` follows a request across the web and miner processes.
``MIA_LOG_FORMAT=text`` gives plain lines instead.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s %(request_id)s"
TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

request_id: ContextVar[str] = ContextVar("request_id", default="")


def accept_request_id(header: str | None) -> str:
    """The caller's id if it is a sane one, else a new one."""
    if header and REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or "") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def formatter(fmt: str = "json") -> logging.Formatter:
    if fmt == "text":
        return logging.Formatter(TEXT)
    return JsonFormatter(
        FIELDS,
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def decorate(handler: logging.Handler, fmt: str = "json") -> None:
    """Give ``handler`` the format and the request id (idempotent)."""
    handler.setFormatter(formatter(fmt))
    if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
        handler.addFilter(RequestIdFilter())


def configure(level: int = logging.INFO, fmt: str = "json") -> None:
    """Root logging for a process of ours: one handler on stderr, our format."""
    root = logging.getLogger()
    if not any(getattr(h, "_mia", False) for h in root.handlers):
        ours = logging.StreamHandler()
        ours._mia = True  # type: ignore[attr-defined]
        root.addHandler(ours)
    for handler in root.handlers:
        decorate(handler, fmt)
    root.setLevel(level)
