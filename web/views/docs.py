"""``/openapi.json`` and ``/docs``: the API described in one file, ``web/openapi.yaml``.

A test checks the document against the registered routes: no endpoint missing,
none extra. ``/docs`` is Swagger UI served by this process: its script and stylesheet
come from the ``flask-swagger-ui`` package (pinned in requirements-gateway.txt, which
ships Swagger UI's own build), under ``/docs/assets/``, so the page works on a closed
network. The page links ``/openapi.json`` too, for a browser without JavaScript.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify, send_from_directory
from flask.typing import ResponseReturnValue

from tasks.errors import NotFound

bp = Blueprint("docs", __name__)

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})
ASSET_MAX_AGE_S = 86400  # the URL carries the package's version: a new one is a new URL
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MIA backend API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css?v={v}"></head>
<body><p style="font:14px sans-serif;margin:8px 20px">The API as OpenAPI 3:
<a href="/openapi.json">/openapi.json</a></p>
<div id="ui"><noscript>Swagger UI needs JavaScript; the document itself is
<a href="/openapi.json">/openapi.json</a>.</noscript></div>
<script src="/docs/assets/swagger-ui-bundle.js?v={v}"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui"}});</script></body></html>
"""


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return document


@lru_cache(maxsize=1)
def swagger_ui() -> tuple[Path, str]:
    """Where the package keeps Swagger UI's build, and the package's version."""
    return Path(str(files("flask_swagger_ui") / "dist")), version("flask-swagger-ui")


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(spec())


@bp.get("/docs")
def docs() -> ResponseReturnValue:
    return Response(PAGE.format(v=swagger_ui()[1]), mimetype="text/html")


@bp.get("/docs/assets/<name>")
def asset(name: str) -> ResponseReturnValue:
    """Swagger UI's script and stylesheet, from the installed package."""
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}: {', '.join(sorted(ASSETS))}", name=name)
    return send_from_directory(swagger_ui()[0], name, max_age=ASSET_MAX_AGE_S)
