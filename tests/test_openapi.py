"""The OpenAPI document matches the routes the app registers: none missing, none extra."""

from __future__ import annotations

import re

from web.views.docs import spec


def documented() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, operations in spec()["paths"].items()
        for method in operations
    }


def registered(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((path, method))
    return found


def test_every_route_is_documented_and_nothing_else(app):
    assert documented() == registered(app)


def test_the_document_is_served_and_well_formed(client):
    body = client.get("/openapi.json").json
    assert body["openapi"].startswith("3.")
    for operations in body["paths"].values():
        for operation in operations.values():
            assert operation["summary"] and operation["responses"]
    page = client.get("/docs")
    assert page.status_code == 200 and b"/openapi.json" in page.data
