"""Server-Sent Events: the wire format, the one loop that relays a job's events, and a
response that streams it unbuffered."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, stream_with_context

from tasks.errors import MiaError

KEEPALIVE = ": keep-alive\n\n"  # a comment: keeps proxies from closing a quiet stream
Event = tuple[str, Any]


def sse(event: str | None, data: Any) -> str:
    """One event; ``data`` is sent as JSON unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def sse_response(events: Iterator[str]) -> Response:
    """The stream's response; its headers go out at once (the server sends them on an
    empty first item), while the job is on its way, so its first event goes alone."""
    return Response(
        stream_with_context(_opened(events)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _opened(events: Iterator[str]) -> Iterator[str]:
    yield ""
    yield from events


def _plain(kind: str, data: Any) -> Iterable[str]:
    return (sse(kind, data),)


def _error(exc: MiaError) -> str:
    return sse("error", exc.to_dict())


def relay(
    events: Iterable[Event],
    draw: Callable[[str, Any], Iterable[str]] = _plain,
    on_error: Callable[[MiaError], str] = _error,
) -> Iterator[str]:
    """The one loop every SSE front door runs: a keep-alive comment for each
    ``keepalive`` event, ``draw`` for every other one; a MiaError raised while
    streaming ends the stream with ``on_error``'s event."""
    try:
        for kind, data in events:
            if kind == "keepalive":
                yield KEEPALIVE
            else:
                yield from draw(kind, data)
    except MiaError as exc:
        yield on_error(exc)
