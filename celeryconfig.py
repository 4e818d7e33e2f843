"""The one Celery configuration, built from the MIA_* settings (``tasks.celery_app``).

Code builds its app with ``tasks.celery_app.create_celery``; this module is the same
configuration as a regular Celery config module, for tools that load one::

    app.config_from_object("celeryconfig")

Importing it reads nothing: the environment is read when Celery first asks for a
setting (``from_settings(Settings.from_env())``, once). The choices and why are in
``tasks.celery_app``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tasks.celery_app import celery_conf as from_settings
from tasks.settings import Settings

__all__ = ["from_settings"]


@cache
def _from_env() -> dict[str, Any]:
    return from_settings(Settings.from_env())


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # hasattr(module, "__path__") and the like: not settings
        raise AttributeError(name)
    try:
        return _from_env()[name]
    except KeyError:
        raise AttributeError(f"celeryconfig has no setting {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_from_env()])
