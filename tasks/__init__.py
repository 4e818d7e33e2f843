"""What the web tier and the miners both run: settings, keys, jobs, dispatch, the
Celery app and its configuration, Lua scripts, and (``tasks.broker``) every hook
into Celery's and kombu's internals.

Nothing here imports Flask, torch, vLLM or llama.cpp, and importing any module of
this package reads no environment and builds no app. What only the web process runs
is ``web.fleet``; the miner's task is ``miners.tasks``.
"""
