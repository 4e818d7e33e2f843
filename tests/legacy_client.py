"""The legacy protocol seen from an old miner: helpers the legacy tests share."""

from __future__ import annotations

import json

from tasks.keys import Keys
from tests.conftest import TOKEN

KEYS = Keys("mia")


def register(client, miner_id: str | None = "old-1", token: str | None = TOKEN, **fields):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"miner_id": miner_id, **fields} if miner_id else fields
    return client.post("/register_miner", json=body, headers=headers)


def key_of(client, miner_id: str = "old-1") -> str:
    response = register(client, miner_id)
    assert response.status_code == 200, response.json
    return str(response.json["key"])


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def get_work(client, key: str | None, **params):
    return client.get("/get_work", query_string=params, headers=bearer(key))


def submit(client, key: str | None, body: dict):
    return client.post("/submit_result", json=body, headers=bearer(key))


def enqueue(client, message: str = "hello", **fields) -> str:
    response = client.post("/chat", json={"message": message, **fields})
    assert response.status_code == 202, response.json
    return str(response.json["job_id"])


def status(client, job_id: str) -> dict:
    return dict(client.get(f"/jobs/{job_id}").json)


def result_of(redis, job_id: str) -> dict | None:
    raw = redis.get(KEYS.result(job_id))
    return None if raw is None else json.loads(raw)
