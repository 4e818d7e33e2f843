"""Request ids: taken from ``X-Request-ID`` (or made), echoed back, carried into jobs;
and, with tracing on, one span per request (a child of the caller's ``traceparent``)."""

from __future__ import annotations

from flask import Flask, Response, g, request

from tasks import tracing
from tasks.logs import REQUEST_ID_HEADER, accept_request_id, request_id


def register_request_ids(app: Flask) -> None:
    @app.before_request
    def take_request_id() -> None:
        g.request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        g.request_id_token = request_id.set(g.request_id)
        if tracing.enabled():  # (the carrier reads every header: only when tracing)
            g.trace = tracing.start(
                f"{request.method} {request.url_rule.rule if request.url_rule else request.path}",
                {k.lower(): v for k, v in request.headers.items()},
                request_id=g.request_id,
            )

    @app.after_request
    def give_request_id(response: Response) -> Response:
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response

    @app.teardown_request
    def forget_request_id(_exc: BaseException | None) -> None:
        try:
            tracing.end(g.pop("trace", None))
        except ValueError:  # a streamed response ends in another context
            pass
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                request_id.reset(token)
            except ValueError:  # a streamed response ends in another context
                request_id.set("")
