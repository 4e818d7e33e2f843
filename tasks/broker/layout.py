r"""kombu's Redis layout, for the parts of the service that read or write it directly
(the legacy leases, the reaper, the Lua scripts' key lists, the Redis ACLs).

kombu's Redis transport keeps one list per priority step of a queue: ``<queue>``,
``<queue>\x06\x163``, ``<queue>\x06\x166``, ``<queue>\x06\x169``; a delivered message
that is not yet acknowledged sits in the ``unacked`` hash under its delivery tag,
scored by time in ``unacked_index``. These are the names before kombu's
``global_keyprefix``, which ``tasks.keys.Keys`` adds. ``tests/test_kombu_transport.py``
checks these against the installed kombu.
"""

from __future__ import annotations

import json

KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"  # delivered, not yet acknowledged: delivery tag -> message
UNACKED_INDEX = "unacked_index"  # delivery tag -> delivery time


def queue_lists(queue: str) -> list[str]:
    """The Redis lists behind a Celery queue, in the order kombu serves them."""
    return [f"{queue}{KOMBU_PRIORITY_SEP}{p}" if p else queue for p in KOMBU_PRIORITY_STEPS]


def step_suffix(priority: int) -> str:
    """What a queue's name gets to name the list of this (kombu) priority's step."""
    step = max(p for p in KOMBU_PRIORITY_STEPS if p <= max(min(priority, 9), 0))
    return f"{KOMBU_PRIORITY_SEP}{step}" if step else ""


def list_for(queue: str, priority: int) -> str:
    """The kombu list a message of this (kombu) priority waits on: its priority step's."""
    return queue + step_suffix(priority)


def unacked_message(entry: bytes | str) -> tuple[str, str, str]:
    """A delivered message from its ``unacked`` entry, which kombu stores as
    ``[message, exchange, routing_key]``: (the message as JSON, exchange, routing key)."""
    message, exchange, routing_key = json.loads(entry)
    return json.dumps(message), exchange, routing_key
