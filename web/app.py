"""The app factory: ``create_app()`` builds the web tier (``web.create_app``)."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from tasks import tracing
from tasks.logs import configure as configure_logging
from tasks.settings import Settings
from web.common.errors import register_error_handlers
from web.common.request_counts import register_request_counts
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
    if settings.trusted_proxies > 0:  # behind a load balancer: its address is not the caller's
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    init_app(app, settings)
    register_error_handlers(app)
    register_request_ids(app)
    api_v2.sock.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    register_request_counts(app)
    logging.getLogger(__name__).info("web tier ready (redis %s)", settings.redis_url)
    return app
