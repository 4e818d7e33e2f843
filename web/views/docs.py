"""``/openapi.json`` and ``/docs``: the API described in one file, ``web/openapi.yaml``.

A test checks the document against the registered routes: no endpoint missing,
none extra. ``/docs`` is Swagger UI (its script from a CDN, in the browser).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("docs", __name__)

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"
SWAGGER = "https://unpkg.com/swagger-ui-dist@5"
PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>MIA backend API</title>
<link rel="stylesheet" href="{SWAGGER}/swagger-ui.css"></head>
<body><div id="ui"></div><script src="{SWAGGER}/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui"}});</script></body></html>
"""


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return document


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(spec())


@bp.get("/docs")
def docs() -> ResponseReturnValue:
    return Response(PAGE, mimetype="text/html")
