"""The Flask web tier: ``create_app()`` builds it; one blueprint per resource.

    gunicorn 'web:create_app()'

Where things are:

- ``web/views/``: the blueprints, one per resource; a view parses, calls, shapes.
- ``web/common/``: what the views share (validation, errors, SSE, request ids, guards).
- ``web/fleet/``: the web process's own work on the fleet, with no Flask in it
  (registry, auth, leases, placement, recovery, the job client, the database).
- ``web/mqtt/``: the MQTT gateway, a process of its own (``python -m web.mqtt``).
- ``web/app.py``: the factory; ``web/services.py``: the objects one process shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``web.fleet`` (no Flask) loads without Flask.
    if name == "create_app":
        from web.app import create_app

        return create_app
    raise AttributeError(f"module 'web' has no attribute {name!r}")
