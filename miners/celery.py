"""The miner's Celery app, built from the MIA_* environment when this module is
imported: ``celery -A miners`` imports it (Celery looks for ``<package>.celery``)."""

from miners import tasks as _tasks  # noqa: F401 - registers mia.generate (a shared task)
from miners.worker import create_miner_app

app = create_miner_app()

__all__ = ["app"]
