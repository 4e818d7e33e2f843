"""The miner: a Celery worker with a heartbeat and an inference engine.

    celery -A miners worker -Q gpu-0 -n gpu-0@%h

The engine modules are imported only by the worker once it is set up.
"""

from miners.worker import MinerApp, create_miner_app

app = create_miner_app()

from miners import tasks as _tasks  # noqa: E402,F401 - registers mia.generate on the app

__all__ = ["MinerApp", "app", "create_miner_app"]
