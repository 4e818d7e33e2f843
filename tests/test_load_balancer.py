"""Several web replicas behind a real HAProxy running the shipped deploy/haproxy/haproxy.cfg.

Two gunicorn web replicas (started as ``make run`` starts its one) on the same Redis and
database, real echo miners whose ``MIA_API_URL`` is the load balancer, and Debian's
haproxy in front. An assistant conversation alternates between the replicas (each turn
addressed to one with the config's ``X-MIA-Replica`` header; ``X-Served-By`` says who
answered) and the session's history holds every turn; a WebSocket on each replica stays
open throughout and hears a new miner appear, which only one replica saw: the other heard
it through Redis pub/sub. An SSE stream arrives piece by piece, and a stopped replica
leaves the rotation by its health check while the conversation goes on.

The tests with HAProxy need Debian's haproxy (.ci/run installs it); skipped locally, with
this reason, where it is missing, but never in CI.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from requests.adapters import HTTPAdapter
from simple_websocket import Client

from chat_service.sessions import SessionStore
from chat_service.tokens import counter
from scripts.processes import stop, wait_for
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.settings import Settings
from tests.conftest import ADMIN
from tests.haproxy_stack import PIN, REPLICAS, Balanced, balanced_stack, needs_haproxy
from tests.test_streaming import events
from web import create_app

CONVERSATION = (
    "What's vegan on your menu?",
    "Please add two margheritas to my order",
    "And add one tiramisu too",
    "Show me my order",
    "That's all, place the order",
    "Can I book a table for 4 at 19:00?",
    "What are your opening hours?",
)
NEW_MINER = ("appeared", "lb-1")


@pytest.fixture
def balanced(redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> Iterator[Balanced]:
    with balanced_stack(redis, redis_url, tmp_path) as found:
        yield found


def say(base: str, message: str, sid: str | None, replica: str) -> tuple[dict[str, Any], str]:
    """One assistant turn sent to ``replica``: (its answer, the replica that answered)."""
    body = {"message": message, **({"session_id": sid} if sid else {})}
    response = requests.post(
        f"{base}/assistant/restaurant/chat", json=body, headers={PIN: replica}, timeout=30
    )
    assert response.status_code == 200, response.text
    return dict(response.json()), response.headers["X-Served-By"]


def converse(base: str) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The whole CONVERSATION, turn n sent to replica n % 2: (session, answers, servers)."""
    sid, answers, servers = "", [], []
    for number, message in enumerate(CONVERSATION):
        answer, server = say(base, message, sid or None, REPLICAS[number % 2])
        sid = sid or answer["session_id"]
        assert answer["session_id"] == sid
        answers.append(answer)
        servers.append(server)
    return sid, answers, servers


def history(redis: redis_lib.Redis, session_id: str) -> list[tuple[str, str]]:
    """The session's history as Redis holds it: (role, content) per turn."""
    session = SessionStore(redis, Scripts(redis), Keys("mia"), counter()).load(
        "restaurant", session_id
    )
    assert not session.new, f"no session {session_id}"
    return [(t.role, t.content) for t in session.history]


def websocket(base: str, replica: str) -> Client:
    return Client.connect(base.replace("http://", "ws://") + "/api/v2/ws", headers={PIN: replica})


def close(ws: Client) -> None:
    if ws.connected:
        ws.close()


def heard(
    ws: Client, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 15
) -> dict[str, Any]:
    """The first message on ``ws`` that is ``wanted`` (others are skipped)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        raw = ws.receive(timeout=left)
        if raw is not None and wanted(message := json.loads(raw)):
            return dict(message)
    raise TimeoutError(f"no wanted message on the WebSocket in {timeout_s:g} s")


def served_by(client: requests.Session, base: str, seen: set[str]) -> bool:
    """One request that names no replica; notes who answered; True once both have."""
    seen.add(client.get(f"{base}/readyz", timeout=5).headers["X-Served-By"])
    return seen == set(REPLICAS)


def stream_arrivals(base: str, message: str) -> list[tuple[float, str, Any]]:
    """A streamed /chat/direct: (when it came, event, data) for each event."""
    body = {"message": message, "stream": True}
    response = requests.post(f"{base}/chat/direct", json=body, stream=True, timeout=30)
    assert response.headers["content-type"].startswith("text/event-stream")
    return [(time.monotonic(), kind, data) for kind, data in events(response)]


@needs_haproxy
def test_a_conversation_alternates_between_replicas_behind_haproxy(balanced: Balanced) -> None:
    base = balanced.base
    balanced.miner("lb-0")
    seen: set[str] = set()  # requests that name no replica, on one kept-alive connection:
    with requests.Session() as client:  # HAProxy balances each one (leastconn: in turns)
        wait_for(lambda: served_by(client, base, seen), 10, "both replicas to answer")
    sockets = {name: websocket(base, name) for name in REPLICAS}
    for ws in sockets.values():
        balanced.stack.callback(close, ws)
        state = heard(ws, lambda m: m["type"] == "system_state")
        assert [d["device_id"] for d in state["devices"]] == ["lb-0"]

    sid, said, servers = converse(base)
    assert servers == [REPLICAS[n % 2] for n in range(len(CONVERSATION))]
    assert [a["class"] for a in said[1:5]] == ["order"] * 4
    (shown,) = said[3]["actions"]  # on web2: the cart that web2 and web1 filled
    assert shown["tool"] == "order_show"
    assert sorted(i["quantity"] for i in shown["result"]["items"]) == [1, 2]
    assert [a["tool"] for a in said[4]["actions"]] == ["order_place"]
    (book,) = said[5]["actions"]
    assert (book["tool"], book["ok"]) == ("reservation_book", True)
    assert said[6]["class"] == "hours_location"  # told from the restaurant's own hours
    assert "Tuesday 12:00-22:00" in said[6]["response"]
    turns = zip(CONVERSATION, (a["response"] for a in said), strict=True)
    pairs = [
        pair for asked, answered in turns for pair in (("user", asked), ("assistant", answered))
    ]
    kept = history(balanced.redis, sid)  # the latest turns, within the history's token bound
    assert len(kept) >= 4 and kept == pairs[-len(kept) :]

    arrivals = stream_arrivals(base, "stream me slowly")
    assert [kind for _, kind, _ in arrivals] == ["piece"] * 4 + ["done"]
    assert "".join(d["delta"] for _, k, d in arrivals if k == "piece") == "echo: stream me slowly"
    came = [t for t, kind, _ in arrivals if kind == "piece"]
    # the pieces came as the miner made them, 100 ms apart, not held back for the next
    # one (HAProxy without http-no-delay: three at once, then one); a stall of this
    # busy machine may bunch two, not more
    apart = [b - a > 0.05 for a, b in itertools.pairwise(came)]
    assert apart.count(True) >= 2, [round(t - came[0], 3) for t in came]

    balanced.miner("lb-1")  # its first heartbeat reached one replica: both sockets hear it
    for ws in sockets.values():
        # (Redis channels are not per database: other tests' events may come too)
        appeared = heard(ws, lambda m: (m.get("change"), m.get("device_id")) == NEW_MINER)
        assert appeared["device"]["engine"] == "echo"
        assert ws.connected

    close(sockets["web2"])  # (a graceful stop waits for open WebSockets)
    stop(balanced.replicas["web2"])
    wait_for(lambda: balanced.servers()["web2"][0] == "DOWN", 15, "HAProxy to take web2 out")
    late, server = say(base, "Do you have tiramisu?", sid, "web2")
    assert server == "web1"  # web2 is out: the header is ignored, the session goes on
    assert history(balanced.redis, sid)[-2:] == [
        ("user", "Do you have tiramisu?"),
        ("assistant", late["response"]),
    ]
    assert sockets["web1"].connected  # open from before the first turn to the end


class FromAddress(HTTPAdapter):
    """Connections from another loopback address than 127.0.0.1 (HAProxy's own)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


@needs_haproxy
def test_the_audit_log_names_the_caller_not_the_load_balancer(balanced: Balanced) -> None:
    """X-Forwarded-For (HAProxy) read by a web tier with MIA_TRUSTED_PROXIES=1."""
    with requests.Session() as caller:
        caller.mount("http://", FromAddress("127.0.0.2"))
        drained = caller.post(f"{balanced.base}/api/v2/miners/lb-9/drain", headers=ADMIN)
        assert drained.status_code == 200, drained.text
    log = requests.get(f"{balanced.base}/api/v2/audit?action=drain", headers=ADMIN).json()
    (entry,) = log["entries"]
    assert (entry["target"], entry["remote_addr"]) == ("lb-9", "127.0.0.2")


@pytest.mark.parametrize(("proxies", "recorded"), [(0, "127.0.0.9"), (1, "203.0.113.7")])
def test_trusted_proxies_decides_whose_address_the_audit_log_keeps(
    settings: Settings, redis: redis_lib.Redis, proxies: int, recorded: str
) -> None:
    """0: the connection's address, the header ignored; 1: the last X-Forwarded-For hop."""
    app = create_app(settings.with_overrides(trusted_proxies=proxies))
    target = f"lb-{uuid.uuid4().hex[:8]}"
    try:
        client = app.test_client()
        drained = client.post(
            f"/api/v2/miners/{target}/drain",
            headers={**ADMIN, "X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
            environ_base={"REMOTE_ADDR": "127.0.0.9"},
        )
        assert drained.status_code == 200, drained.json
        log = client.get(f"/api/v2/audit?target={target}", headers=ADMIN).get_json()
        assert [e["remote_addr"] for e in log["entries"]] == [recorded]
    finally:
        app.extensions["mia"].waiter.close()
        app.extensions["mia"].housekeeper.close()
