"""Building the Celery app (the web tier's and every miner's) from celeryconfig."""

from __future__ import annotations

from celery import Celery

import celeryconfig
from tasks.settings import Settings
from tasks.signing import setup_signing


def create_celery(
    main: str,
    settings: Settings | None = None,
    cls: type[Celery] = Celery,
    stock_transport: bool = False,
) -> Celery:
    """A Celery app configured for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    app = cls(main)
    app.conf.update(celeryconfig.from_settings(settings, stock_transport))
    setup_signing(app, settings)
    return app
