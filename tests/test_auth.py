"""Miner keys: renewal, rotation, revocation; the admin token; the audit log.

The web tier runs in-process (Flask's test client) on the real Redis and the session's
SQLite database; each test registers ids of its own (the database outlives a test).
"""

from __future__ import annotations

import pytest
from flask import Flask

from tasks.jobs import Job
from tests.auth_client import REGISTRATION, beat, entries, key_of, live, new_id, register
from tests.conftest import ADMIN
from tests.legacy_client import get_work
from web import create_app
from web.fleet.auth import MinerAuth

# -- register-renewal ----------------------------------------------------------------


def test_a_new_id_needs_only_the_registration_token(client):
    miner_id = new_id()
    key = key_of(client, miner_id)
    assert beat(client, miner_id, key).status_code == 200
    (entry,) = entries(client, target=miner_id)
    assert (entry["actor"], entry["action"]) == ("registration-token", "register")
    assert entry["detail"] == {"kind": "push", "renewed": False, "reinstated": False}


def test_a_key_never_used_can_be_replaced_with_the_registration_token(client):
    """The answer that carried the key was lost (the miner timed out waiting for a busy
    web tier): until the key is used, the registration token alone renews the id."""
    miner_id = new_id()
    lost = key_of(client, miner_id)
    response = register(client, miner_id)
    assert response.status_code == 200
    assert beat(client, miner_id, lost).status_code == 401
    assert beat(client, miner_id, response.json["key"]).status_code == 200
    assert register(client, miner_id).status_code == 409  # used now: the key is needed


def test_renewing_an_id_without_its_key_is_409_and_the_key_keeps_working(client):
    miner_id = new_id()
    key = key_of(client, miner_id)
    assert beat(client, miner_id, key).status_code == 200  # the key is in use
    response = register(client, miner_id)
    assert response.status_code == 409
    assert response.json["reason"] == "key_required"
    assert "X-Miner-Key" in response.json["error"] and miner_id in response.json["error"]
    assert beat(client, miner_id, key).status_code == 200


def test_renewing_with_another_miners_key_is_401(client):
    mine, other = new_id(), new_id()
    key_of(client, mine)
    other_key = key_of(client, other)
    response = register(client, mine, current_key=other_key)
    assert response.status_code == 401
    assert "current key" in response.json["error"]


def test_renewing_with_the_current_key_rotates_it(client):
    miner_id = new_id()
    old = key_of(client, miner_id)
    response = register(client, miner_id, current_key=old)
    assert response.status_code == 200
    assert beat(client, miner_id, old).status_code == 401
    assert beat(client, miner_id, response.json["key"]).status_code == 200
    assert entries(client, target=miner_id, limit=1)[0]["actor"] == f"miner:{miner_id}"


def test_the_admin_token_renews_any_id(client):
    miner_id = new_id()
    key_of(client, miner_id)
    response = register(client, miner_id, headers=ADMIN)
    assert response.status_code == 200
    assert entries(client, target=miner_id, limit=1)[0]["actor"] == "admin"


def test_a_legacy_id_renews_with_the_token_alone_but_a_push_id_is_not_taken(client):
    legacy, push = new_id("old"), new_id()
    first = key_of(client, legacy, path="/register_miner")
    second = key_of(client, legacy, path="/register_miner")  # an old miner keeps no key
    assert get_work(client, first).status_code == 401
    assert get_work(client, second).status_code == 204
    key_of(client, push)
    taken = register(client, push, path="/register_miner")
    assert taken.status_code == 409


# -- admin token ---------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, REGISTRATION, {"Authorization": "Bearer nope"}])
def test_admin_endpoints_need_the_admin_token(client, headers):
    calls = [
        ("post", "/api/v2/models/load", {"json": {"model_id": "echo"}}),
        ("post", "/api/v2/models/unload", {"json": {"model_id": "echo"}}),
        ("post", "/api/v2/miners/m1/drain", {}),
        ("post", "/api/v2/miners/m1/undrain", {}),
        ("delete", "/api/v2/miners/m1/key", {}),
        ("post", "/api/v2/miners/m1/key", {}),
        ("get", "/api/v2/audit", {}),
    ]
    for method, path, kwargs in calls:
        response = getattr(client, method)(path, headers=headers, **kwargs)
        assert response.status_code == 401, (path, response.json)


@pytest.fixture(scope="module")
def strict_app(settings) -> Flask:
    """No admin token, and legacy ids renew only with their key."""
    return create_app(
        settings.with_overrides(admin_token="", admin_token_file="", legacy_open_renewal=0)
    )


def test_without_an_admin_token_admin_endpoints_are_403(strict_app, redis):
    client = strict_app.test_client()
    response = client.post("/api/v2/models/load", json={"model_id": "echo"}, headers=ADMIN)
    assert response.status_code == 403
    assert "MIA_ADMIN_TOKEN" in response.json["error"]
    assert client.get("/api/v2/audit", headers=ADMIN).status_code == 403


def test_legacy_open_renewal_off_needs_the_current_key(strict_app, redis):
    client = strict_app.test_client()
    miner_id = new_id("old")
    key = key_of(client, miner_id, path="/register_miner")
    assert register(client, miner_id, path="/register_miner").status_code == 409
    renewed = register(client, miner_id, current_key=key, path="/register_miner")
    assert renewed.status_code == 200


# -- rotation ------------------------------------------------------------------------


def test_an_admin_rotation_stops_the_old_key_at_once(client):
    push, legacy = new_id(), new_id("old")
    push_key = key_of(client, push)
    legacy_key = key_of(client, legacy, path="/register_miner")
    assert get_work(client, legacy_key).status_code == 204  # cached as valid
    for miner_id in (push, legacy):
        response = client.post(f"/api/v2/miners/{miner_id}/key", headers=ADMIN)
        assert response.status_code == 200
        new = response.json["key"]
        if miner_id == push:
            assert beat(client, push, push_key).status_code == 401
            assert beat(client, push, new).status_code == 200
        else:
            assert get_work(client, legacy_key).status_code == 401
            assert get_work(client, new).status_code == 204
    assert entries(client, target=push, limit=1)[0]["action"] == "rotate_key"


def test_a_miner_rotates_its_own_key_but_not_another_ones(client):
    mine, other = new_id(), new_id()
    key = key_of(client, mine)
    other_key = key_of(client, other)
    refused = client.post(
        f"/api/v2/miners/{mine}/key", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert refused.status_code == 401
    response = client.post(f"/api/v2/miners/{mine}/key", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert beat(client, mine, key).status_code == 401
    assert beat(client, mine, response.json["key"]).status_code == 200
    assert entries(client, target=mine, limit=1)[0]["actor"] == f"miner:{mine}"


def test_rotating_an_unknown_miner_is_404(client):
    assert client.post(f"/api/v2/miners/{new_id()}/key", headers=ADMIN).status_code == 404


# -- revocation ----------------------------------------------------------------------


def test_a_revoked_miner_leaves_dispatch_at_once_and_only_an_admin_brings_it_back(client):
    miner_id = new_id()
    key = key_of(client, miner_id)
    assert beat(client, miner_id, key).status_code == 200
    assert miner_id in live(client)
    response = client.delete(f"/api/v2/miners/{miner_id}/key", headers=ADMIN)
    assert response.status_code == 200 and response.json["revoked"] is True
    assert miner_id not in live(client)
    refused = beat(client, miner_id, key)
    assert refused.status_code == 401 and "revoked" in refused.json["error"]
    assert miner_id not in live(client)
    for current_key in (None, key):
        again = register(client, miner_id, current_key=current_key)
        assert again.status_code == 403 and again.json["code"] == "revoked"
    assert client.post(f"/api/v2/miners/{miner_id}/key", headers=ADMIN).status_code == 403
    back = register(client, miner_id, headers=ADMIN)
    assert back.status_code == 200
    assert beat(client, miner_id, back.json["key"]).status_code == 200
    actions = [(e["action"], e["actor"]) for e in entries(client, target=miner_id)]
    assert actions == [
        ("register", "admin"),
        ("revoke_key", "admin"),
        ("register", "registration-token"),
    ]
    assert entries(client, target=miner_id, limit=1)[0]["detail"]["reinstated"] is True


def test_a_revoked_legacy_miner_gets_no_work_and_cannot_register_again(client):
    miner_id = new_id("old")
    key = key_of(client, miner_id, path="/register_miner")
    assert client.delete(f"/api/v2/miners/{miner_id}/key", headers=ADMIN).status_code == 200
    assert get_work(client, key).status_code == 401
    assert register(client, miner_id, path="/register_miner").status_code == 403


def test_a_heartbeat_verified_just_before_the_revocation_does_not_bring_it_back(
    client, app, monkeypatch
):
    miner_id = new_id()
    key = key_of(client, miner_id)
    svc = app.extensions["mia"]
    auth: MinerAuth = svc.auth
    verify = auth.verify
    # A heartbeat checks the cached key digest in the same Lua step that records it, so
    # a revocation cannot land in between; with the cache cold it asks the database
    # first (auth.verify), and that is where a revocation can still slip in.
    svc.redis.delete(svc.keys.miner_key(miner_id))

    def verify_then_revoke(mid: str, presented: str | None) -> None:
        verify(mid, presented)
        auth.revoke(mid)  # the revocation lands between this beat's check and its write
        app.extensions["mia"].registry.evict(mid, "revoked")

    monkeypatch.setattr(auth, "verify", verify_then_revoke)
    assert beat(client, miner_id, key).status_code == 401
    assert miner_id not in live(client)


def test_revocation_of_an_unknown_miner_is_404(client):
    assert client.delete(f"/api/v2/miners/{new_id()}/key", headers=ADMIN).status_code == 404


# -- drains and the audit log ----------------------------------------------------------


def job() -> Job:
    return Job(messages=[{"role": "user", "content": "x"}])


def test_drain_and_undrain_steer_dispatch(client, app, redis):
    a, b = sorted([new_id(), new_id()])
    for miner_id in (a, b):
        assert beat(client, miner_id, key_of(client, miner_id), slots=8).status_code == 200
    jobs = app.extensions["mia"].jobs
    drained = client.post(f"/api/v2/miners/{a}/drain", json={"ttl_s": 60}, headers=ADMIN)
    assert drained.status_code == 200
    assert 0 < redis.pttl(f"{{mia}}:drain:{a}") <= 60_000
    assert {jobs.submit(job()).miner_id for _ in range(3)} == {b}
    assert client.post(f"/api/v2/miners/{a}/undrain", headers=ADMIN).json["was_drained"] is True
    assert not redis.exists(f"{{mia}}:drain:{a}")
    picked = {jobs.submit(job()).miner_id for _ in range(4)}
    assert a in picked
    (undrain, drain) = entries(client, target=a, limit=2)
    assert (drain["action"], drain["detail"]["ttl_s"]) == ("drain", 60.0)
    assert undrain["action"] == "undrain"


def test_the_audit_log_says_who_when_and_from_where(client):
    miner_id = new_id()
    key_of(client, miner_id)
    client.post(f"/api/v2/miners/{miner_id}/drain", headers=ADMIN)
    client.post("/api/v2/models/load", json={"model_id": "no-such-model"}, headers=ADMIN)
    latest = entries(client, limit=2)
    assert [e["action"] for e in latest] == ["drain", "register"]  # a refused load is not one
    assert latest[0]["actor"] == "admin" and latest[0]["remote_addr"] == "127.0.0.1"
    assert latest[0]["at"].endswith("Z")
    assert [e["target"] for e in entries(client, action="drain", limit=1)] == [miner_id]
    for wrong in ("explode", ""):
        bad = client.get("/api/v2/audit", query_string={"action": wrong}, headers=ADMIN)
        assert bad.status_code == 400 and bad.json["field"] == "action"
    assert client.get("/api/v2/audit?limit=0", headers=ADMIN).json["field"] == "limit"
