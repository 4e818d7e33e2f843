"""The serving stacks ``bench.serving`` compares (issue 25, point 5): which of them
serve the WebSocket, measured the way the bench measures it, on real servers, and
the choice among those that do."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import requests

from bench import serving
from bench.stack import environment, web_tier


def test_granian_cannot_upgrade_the_websocket_and_caddy_in_front_of_it_sends_it_to_gthread(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        settings, _ = web_tier(stack, tmp_path)  # gunicorn gthread, as make run
        env = environment(settings)
        assert serving.serves_websocket(settings.port)
        gunicorn = server_of(settings.port)
        granian = serving.Stack("granian", "granian", 1, 4)
        proxied = serving.Stack("proxied", "granian+caddy", 1, 4)
        with serving.up(granian, env, tmp_path) as (port, _):
            assert not serving.serves_websocket(port)
            by_granian = server_of(port)
        assert by_granian != gunicorn
        with serving.up(proxied, env, tmp_path) as (port, procs):
            assert serving.serves_websocket(port)
            assert [Path(cast(list[str], p.args)[0]).name for p in procs] == [
                "granian",
                "gunicorn",
                "caddy",
            ]
            assert server_of(port) == by_granian  # everything else goes to granian
        assert all(p.poll() is not None for p in procs)  # stopped on leaving


def server_of(port: int) -> str | None:
    """Which server answered ``/readyz`` on ``port`` (its ``Server`` header)."""
    response = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert response.status_code == 200
    return response.headers.get("server")


def row(name: str, websocket: bool, rps: float, p50: float) -> dict[str, Any]:
    return {"stack": name, "websocket": websocket, "req_per_s": rps, "new_connection_p50_ms": p50}


def test_the_winner_is_chosen_among_the_stacks_that_serve_the_websocket() -> None:
    rows = [
        {"stack": "gevent", "skipped": "gevent is not installed"},
        row("gthread", True, 700.0, 3.1),
        row("granian", False, 900.0, 2.5),  # faster on both, but no WebSocket
        row("proxied", True, 650.0, 3.0),
    ]
    assert serving.winners(rows) == {"req_per_s": "gthread", "new_connection_p50_ms": "proxied"}
    assert serving.winners([row("granian", False, 900.0, 2.5)]) == {}


def test_the_default_stack_is_the_one_make_run_starts() -> None:
    from scripts.launch import web_argv
    from tasks.settings import Settings

    default = serving.STACKS[0]
    argv = web_argv(Settings())
    assert argv[argv.index("--worker-class") + 1] == default.kind
    assert argv[argv.index("--workers") + 1] == str(default.workers)
    assert argv[argv.index("--threads") + 1] == str(default.threads)
