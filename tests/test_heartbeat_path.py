"""``POST /heartbeat`` in one Redis round trip: ``beat.lua`` checks the cached key
digest, records the heartbeat and confirms the key in one step."""

from __future__ import annotations

from tests.auth_client import beat, key_of, live, new_id


def test_a_beat_confirms_the_key_and_indexes_the_miner(client, app, redis):
    svc = app.extensions["mia"]
    miner_id = new_id()
    key = key_of(client, miner_id)
    assert redis.exists(svc.keys.unconfirmed(miner_id))
    assert beat(client, miner_id, key, slots=2).status_code == 200
    assert not redis.exists(svc.keys.unconfirmed(miner_id))
    assert redis.zscore(svc.keys.index, miner_id) is not None
    assert miner_id in live(client)


def test_a_cold_cache_is_filled_from_the_database(client, app, redis):
    svc = app.extensions["mia"]
    miner_id = new_id()
    key = key_of(client, miner_id)
    redis.delete(svc.keys.miner_key(miner_id))
    assert beat(client, miner_id, key).status_code == 200
    assert redis.get(svc.keys.miner_key(miner_id)) is not None
    assert miner_id in live(client)


def test_wrong_or_revoked_keys_write_nothing(client, app, redis):
    svc = app.extensions["mia"]
    miner_id, other = new_id(), new_id()
    key, other_key = key_of(client, miner_id), key_of(client, other)
    refused = beat(client, miner_id, other_key)
    assert refused.status_code == 401 and "wrong key" in refused.json["error"]
    assert not redis.exists(svc.keys.heartbeat(miner_id))
    assert redis.exists(svc.keys.unconfirmed(miner_id))  # not used yet: still renewable
    svc.auth.revoke(miner_id)
    refused = beat(client, miner_id, key)
    assert refused.status_code == 401 and "revoked" in refused.json["error"]
    assert not redis.exists(svc.keys.heartbeat(miner_id))
    assert miner_id not in live(client)


def test_a_bad_body_from_a_stranger_is_401_not_400(client):
    miner_id = new_id()
    key_of(client, miner_id)
    body = {"miner_id": miner_id, "status": "sleeping", "slots": 1}
    answer = client.post("/heartbeat", json=body, headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 401
