"""The core shared by the web tier and the miners: settings, keys, dispatch, results.

Nothing here imports Flask, torch, vLLM or llama.cpp.
"""

from tasks.dispatch import Dispatched, Dispatcher, RedisSelector
from tasks.jobs import GENERATE, Job
from tasks.settings import Settings

__all__ = ["GENERATE", "Dispatched", "Dispatcher", "Job", "RedisSelector", "Settings"]
