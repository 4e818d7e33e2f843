"""Schemathesis against the app's own ``/openapi.json``, in process (WSGI).

Every documented operation gets generated requests, valid and invalid (schemathesis'
positive and negative modes, its coverage phase's boundary values, then
``EXAMPLES`` fuzzed ones), derandomized so that CI sees the same requests each run.
Each response must not be a 5xx and must match the document: a documented status,
its content type, its schema; and a request the document calls invalid (negative
mode) must be refused with a 4xx.

No miner runs: a valid job waits on ``shared`` and answers 504 after the short
``request_timeout_s`` below, a named model nobody serves 422, a legacy long poll
gives up after ``max_wait_s``. Miner endpoints get, in about half the examples, a
valid key (of a miner registered here) so that their bodies are read, not only 401.

Excluded: ``GET /api/v2/ws``, the WebSocket: an upgrade needs the raw socket, which
an in-process WSGI call does not have, and what follows is not HTTP request/response.
"""

from __future__ import annotations

import zlib

import pytest
import redis as redis_lib
import schemathesis
from flask import Flask
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN, TOKEN
from web import create_app
from web.fleet.db import migrate
from web.views import docs

EXAMPLES = 25
# The 5xx a fleet with no miner gives by design (documented): the caller stopped
# waiting, the model is known but not loaded, no device can take the model.
NO_MINER = {504: "timeout", 503: "model_not_loaded", 507: "does_not_fit"}
CONFIG = {
    "seed": 9,
    "request-timeout": 5,
    "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", *map(str, NO_MINER)]},
        # Invalid data refused: schemathesis' list, plus 413 (a body past the size limit,
        # e.g. more context turns than allowed, each long, is refused before it is read).
        "negative_data_rejection": {
            "expected-statuses": [
                *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422"),
                *("428", "429", "5xx"),
            ]
        },
    },
}
# Which credential a request may carry instead of the generated one (operations the
# document secures with the admin scheme take the admin token).
KEYED = {
    "/heartbeat": "push",
    "/get_work": "legacy",
    "/submit_result": "legacy",
    "/register": "token",
    "/register_miner": "token",
}


@pytest.fixture(scope="module")
def fuzzed_app(settings, redis_url, tmp_path_factory):
    """The app with short waits, an empty Redis and a database of its own (fuzzing
    registers miners). Module-scoped: hypothesis runs many examples per test."""
    with redis_lib.Redis.from_url(redis_url) as client:
        client.flushdb()
    database = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'mia.db'}"
    migrate(database)
    return create_app(
        settings.with_overrides(database_url=database, request_timeout_s=0.2, max_wait_s=0.3)
    )


@pytest.fixture(scope="module")
def credentials(fuzzed_app) -> dict[str, str]:
    client = fuzzed_app.test_client()
    token = {"Authorization": f"Bearer {TOKEN}"}
    push_id = "fuzz-push"  # the database is new: no renewal needed
    push = client.post("/register", json={"miner_id": push_id}, headers=token)
    legacy = client.post("/register_miner", json={"miner_id": "fuzz-legacy"}, headers=token)
    assert push.status_code == legacy.status_code == 200, (push.json, legacy.json)
    return {
        "push": push.json["key"],
        "push_id": push_id,
        "legacy": legacy.json["key"],
        "token": TOKEN,
        "admin": ADMIN_TOKEN,
    }


def document_app() -> Flask:
    """Serves ``/openapi.json`` with the app's own view, and nothing else: the schema is
    read when the module is imported, before any fixture (pytest 9 breaks
    schemathesis' fixture-loaded schemas), and the requests go to ``fuzzed_app``."""
    app = Flask(__name__)
    app.register_blueprint(docs.bp)
    return app


schema = schemathesis.openapi.from_wsgi(
    "/openapi.json", document_app(), config=schemathesis.Config.from_dict(CONFIG)
).exclude(path="/api/v2/ws")


def test_the_fuzzed_document_is_the_one_the_app_serves(fuzzed_app):
    assert fuzzed_app.test_client().get("/openapi.json").json == schema.raw_schema


def only_the_no_miner_5xx(ctx, response, case) -> None:
    """A 5xx passes ``not_a_server_error`` above only as one of ``NO_MINER``."""
    if response.status_code < 500:
        return
    body = response.json()
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else body.get("code")  # OpenAI's or ours
    assert NO_MINER.get(response.status_code) == code, f"{response.status_code}: {body}"


CHECKS = [
    not_a_server_error,
    only_the_no_miner_5xx,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def credential_for(case) -> str | None:
    """Which valid credential the operation takes, if any: a miner's, a token."""
    security = case.operation.definition.raw.get("security", [])
    admin = any("admin" in requirement for requirement in security)
    return KEYED.get(case.operation.path, "admin" if admin else None)


def authorize(case, kind: str, credentials: dict[str, str]) -> None:
    """Give ``case`` a valid credential of ``kind`` (and the matching miner id)."""
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {credentials[kind]}"}
    if kind == "push" and isinstance(case.body, dict):
        case.body = {**case.body, "miner_id": credentials["push_id"]}


def coin(case) -> bool:
    """Heads for about half the cases, the same each run (no ``@given``: it would turn
    off schemathesis' coverage phase)."""
    return zlib.crc32(repr((case.body, case.query, case.headers)).encode()) % 2 == 0


@schema.parametrize()
def test_every_answer_is_documented_and_none_is_a_5xx(case, fuzzed_app, credentials):
    kind = credential_for(case)
    if kind is not None and coin(case):
        authorize(case, kind, credentials)
    # buffered: the test client reads the whole answer and closes it, as a server does
    case.call_and_validate(app=fuzzed_app, checks=CHECKS, buffered=True)
