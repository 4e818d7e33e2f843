"""Request ids: taken from ``X-Request-ID`` (or made), echoed back, carried into jobs;
and, with tracing on, one span per request (a child of the caller's ``traceparent``)."""

from __future__ import annotations

from flask import Flask, Response, g, request

from tasks import tracing
from tasks.logs import REQUEST_ID_HEADER, accept_request_id, request_id


def register_request_ids(app: Flask) -> None:
    # Each hook resolves Flask's proxies (``g``, ``request``) once: every access through
    # one is a context lookup, and these run on every request.
    @app.before_request
    def take_request_id() -> None:
        ctx = g._get_current_object()
        req = request._get_current_object()  # type: ignore[attr-defined]
        headers = req.headers
        ctx.request_id = rid = accept_request_id(headers.get(REQUEST_ID_HEADER))
        ctx.request_id_token = request_id.set(rid)
        if tracing.enabled():
            rule = req.url_rule
            ctx.trace = tracing.start(
                f"{req.method} {rule.rule if rule else req.path}",
                {field: headers.get(field) for field in tracing.FIELDS},  # not all headers
                request_id=rid,
            )

    @app.after_request
    def give_request_id(response: Response) -> Response:
        rid = g.get("request_id")
        if rid is not None:
            response.headers[REQUEST_ID_HEADER] = rid
        return response

    @app.teardown_request
    def forget_request_id(_exc: BaseException | None) -> None:
        ctx = g._get_current_object()
        try:
            tracing.end(ctx.pop("trace", None))
        except ValueError:  # a streamed response ends in another context
            pass
        token = ctx.pop("request_id_token", None)
        if token is not None:
            try:
                request_id.reset(token)
            except ValueError:  # a streamed response ends in another context
                request_id.set("")
