"""Building the Celery app (the web tier's and every miner's) from celeryconfig."""

from __future__ import annotations

from celery import Celery

import celeryconfig
from tasks.settings import Settings


def create_celery(
    main: str,
    settings: Settings | None = None,
    cls: type[Celery] = Celery,
    stock_transport: bool = False,
) -> Celery:
    """A Celery app configured for ``settings`` (default: from the environment)."""
    app = cls(main)
    conf = celeryconfig.from_settings(settings or Settings.from_env(), stock_transport)
    app.conf.update(conf)
    return app
