"""``mia_http_requests_total{route, method, status}``: every answer counted by its route
(the URL rule, so ids in paths do not make new series), method and status class.

Each route's methods start at 0 for every class in ``HTTP_STATUS_CLASSES`` when the app
is built; a request that matches no route counts as route ``unmatched``, and a method
outside the usual ones as ``other``, so no caller can grow the number of series.
"""

from __future__ import annotations

from flask import Flask, Response, request

from tasks.metrics import HTTP_REQUESTS, HTTP_STATUS_CLASSES

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "unmatched"


def register_request_counts(app: Flask) -> None:
    """Count every answer of ``app`` (call once its blueprints are registered)."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for status in HTTP_STATUS_CLASSES:
                HTTP_REQUESTS.labels(rule.rule, method, status)

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(route, method, f"{response.status_code // 100}xx").inc()
        return response
