"""Building the Celery app (the web tier's and every miner's) from celeryconfig."""

from __future__ import annotations

from typing import Any

from celery import Celery

import celeryconfig
from tasks.settings import Settings


def create_celery(
    main: str, settings: Settings | None = None, cls: type[Celery] = Celery, **kwargs: Any
) -> Celery:
    """A Celery app configured for ``settings`` (default: from the environment)."""
    app = cls(main, **kwargs)
    app.conf.update(celeryconfig.from_settings(settings or Settings.from_env()))
    return app
