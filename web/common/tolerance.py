"""What the legacy endpoints take beyond the strict API (issue 21, point 4).

``/register_miner``, ``/get_work``, ``/submit_result``, ``/chat`` and ``/jobs/<id>``
serve clients written against older versions of the product, so they ignore fields
they do not know (every other endpoint refuses them) and take a miner id sent as a
JSON integer (``7`` is ``"7"``). A known field with a malformed value is still a 400
naming it. Each set of ignored fields is logged once per endpoint and miner (per
endpoint for ``/chat``, which has no miner), remembered in Redis (``web.fleet.once``).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import request

from web.common import validation as v
from web.fleet.auth import check_miner_id
from web.services import services

log = logging.getLogger(__name__)

SHOWN_NAMES = 10  # a log line names at most this many ignored fields
SHOWN_CHARS = 64  # of each name


def tolerant_body(allowed: set[str]) -> v.Tolerated:
    """The body's known fields and the names of the others (ignored)."""
    return v.json_object(allowed, tolerant=True)


def note_ignored(ignored: list[str], miner_id: str | None = None) -> None:
    """Log the ignored fields, once per endpoint, miner and set of names."""
    if not ignored:
        return
    who = miner_id or ""
    if not services().ignored.first(request.path, who, *ignored):
        return
    shown = [name[:SHOWN_CHARS] for name in ignored[:SHOWN_NAMES]]
    more = f" and {len(ignored) - SHOWN_NAMES} more" if len(ignored) > SHOWN_NAMES else ""
    log.warning(
        "%s ignored unknown fields %s%s%s (logged once)",
        request.path,
        ", ".join(repr(name) for name in shown),
        more,
        f" from miner {who}" if who else "",
    )


def miner_id_value(value: Any) -> str | None:
    """A miner id a legacy client sent (body or query string), as text: a JSON integer is
    its decimal digits; absent, null or empty is None; anything else malformed is a 400
    naming ``miner_id`` (``true`` and ``7.0`` are not ids)."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return check_miner_id(value)


def query_miner_id() -> str | None:
    """``?miner_id=`` of a legacy request (query strings are text: ``7`` is ``"7"``)."""
    return miner_id_value(request.args.get("miner_id"))
