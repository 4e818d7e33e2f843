"""The miner: a Celery worker with a heartbeat and an inference engine.

    celery -A miners worker -Q gpu-0 -n gpu-0@%h

Importing this package does nothing. Celery's ``-A miners`` finds the app in
``miners.celery`` (Celery's own convention for a package), which builds it from the
environment; the engine modules are imported only by the worker once it is set up.
"""
