"""Miner keys with real push miners: revocation, an admin rotation, a restart on the key
file; and how ``make run`` renews its own miner's key with the admin token."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from scripts.processes import stop, wait_for
from scripts.stack import renew_own_key
from tests.conftest import ADMIN, ADMIN_TOKEN, TOKEN
from tests.miner_processes import live_miner_ids


def chat(api, message: str) -> dict:
    response = api.post(f"{api.base}/chat/direct", json={"message": message}, timeout=20)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_revoked_miner_leaves_dispatch_at_once_and_stops(api, miner, settings):
    revoked = miner("rv1", slots=2)
    miner("rv2", slots=2)
    assert {chat(api, f"m{i}")["miner_id"] for i in range(6)} == {"rv1", "rv2"}

    response = api.delete(f"{api.base}/api/v2/miners/rv1/key", headers=ADMIN, timeout=5)
    assert response.status_code == 200
    assert live_miner_ids(settings) == {"rv2"}  # at once, not after the heartbeat TTL
    assert {chat(api, f"after {i}")["miner_id"] for i in range(6)} == {"rv2"}
    # its heartbeats are refused, it cannot register back, and its worker shuts down
    wait_for(lambda: revoked.proc.poll() is not None, 30, "the revoked miner to stop")
    assert "is revoked" in revoked.output()
    assert live_miner_ids(settings) == {"rv2"}


def key_file(settings, miner_id: str) -> Path:
    return Path(settings.data_dir) / f"miner-{miner_id}.key"


def test_an_admin_rotation_locks_the_miner_out_until_its_key_file_has_the_new_key(
    api, miner, settings
):
    found = miner("rk1")
    first_key = key_file(settings, "rk1").read_text()
    assert (key_file(settings, "rk1").stat().st_mode & 0o777) == 0o600
    rotated = api.post(f"{api.base}/api/v2/miners/rk1/key", headers=ADMIN, timeout=5)
    new_key = rotated.json()["key"]
    # its next heartbeat is refused; renewing with the old key (in its file) is refused too
    wait_for(lambda: "rk1" not in live_miner_ids(settings), 10, "rk1 to leave dispatch")
    wait_for(lambda: "is not miner rk1's current key" in found.output(), 10, "a refusal")
    assert key_file(settings, "rk1").read_text() == first_key
    key_file(settings, "rk1").write_text(new_key)  # what the operator does
    wait_for(lambda: "rk1" in live_miner_ids(settings), 40, "rk1 to come back")
    assert key_file(settings, "rk1").read_text() not in (first_key, new_key)  # renewed
    assert chat(api, "back")["miner_id"] == "rk1"


def test_a_restarted_miner_renews_its_id_with_its_key_file(api, miner, settings):
    first = miner("rs1")
    stop(first.proc)
    wait_for(lambda: "rs1" not in live_miner_ids(settings), 10, "rs1 to leave")
    miner("rs1")  # the fixture waits until it heartbeats again
    assert chat(api, "again")["miner_id"] == "rs1"
    taken = requests.post(
        f"{api.base}/register",
        json={"miner_id": "rs1"},
        headers={"Authorization": f"Bearer {settings.registration_token}"},
        timeout=5,
    )
    assert taken.status_code == 409  # the shared token alone cannot take its id


def test_make_run_renews_its_own_miners_key_when_the_database_has_another(api, settings):
    """What ``make run`` does before it starts miner gpu-0, for each state of the id."""
    path = key_file(settings, "own")

    def registers() -> int:  # what the miner does at start, with its key file
        response = api.post(
            f"{api.base}/register",
            json={"miner_id": "own"},
            headers={"Authorization": f"Bearer {TOKEN}", "X-Miner-Key": path.read_text()},
            timeout=5,
        )
        if response.ok:
            path.write_text(response.json()["key"])
        return response.status_code

    assert renew_own_key(settings, api.base, ADMIN_TOKEN, "own") == ""  # a new id
    path.write_text("a key of another database's")
    assert registers() == 200  # a new id registers with any key
    assert renew_own_key(settings, api.base, ADMIN_TOKEN, "own") == ""  # its current key

    path.write_text("a key of another database's")
    assert registers() == 401  # what the miner would meet, again and again
    note = renew_own_key(settings, api.base, ADMIN_TOKEN, "own")
    assert f"{path} holds another key" in note and "renewed its key" in note
    assert (path.stat().st_mode & 0o777) == 0o600
    assert registers() == 200

    path.unlink()
    assert "there is no key file" in renew_own_key(settings, api.base, ADMIN_TOKEN, "own")
    assert registers() == 200

    api.delete(f"{api.base}/api/v2/miners/own/key", headers=ADMIN, timeout=5)
    assert "reinstated it" in renew_own_key(settings, api.base, ADMIN_TOKEN, "own")
    assert registers() == 200

    path.write_text("a key of another database's")
    with pytest.raises(RuntimeError, match="without an admin token .* MIA_ADMIN_TOKEN"):
        renew_own_key(settings, api.base, "", "own")
    with pytest.raises(RuntimeError, match="answered 401"):
        renew_own_key(settings, api.base, "not the admin token", "own")
