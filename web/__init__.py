"""The Flask web tier: ``create_app()`` builds it; one blueprint per resource.

    gunicorn 'web:create_app()'

Where things are:

- ``web/views/``: the blueprints, one per resource; a view parses, calls, shapes.
- ``web/common/``: what the views share (validation, errors, SSE, request ids, guards).
- ``web/fleet/``: the web process's own work on the fleet, with no Flask in it
  (registry, auth, leases, placement, recovery, the job client, the database).
- ``web/mqtt/``: the MQTT gateway, a process of its own (``python -m web.mqtt``).
- ``web/services.py``: the objects one process shares, built once by the factory.
"""

from __future__ import annotations

import logging

from flask import Flask

from tasks import tracing
from tasks.logs import configure as configure_logging
from tasks.settings import Settings
from web.common.errors import register_error_handlers
from web.common.request_ids import register_request_ids
from web.common.validation import body_limit
from web.services import init_app
from web.views import BLUEPRINTS, api_v2

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """A web tier configured from ``settings`` (default: the MIA_* environment)."""
    settings = settings or Settings.from_env()
    configure_logging(fmt=settings.log_format)
    tracing.setup("mia-web")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = body_limit(settings.max_message_chars)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    init_app(app, settings)
    register_error_handlers(app)
    register_request_ids(app)
    api_v2.sock.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    logging.getLogger(__name__).info("web tier ready (redis %s)", settings.redis_url)
    return app
