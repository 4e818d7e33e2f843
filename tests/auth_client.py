"""Registering, beating and reading the audit log through the Flask test client."""

from __future__ import annotations

import uuid

from tests.conftest import ADMIN, TOKEN

REGISTRATION = {"Authorization": f"Bearer {TOKEN}"}


def new_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(client, miner_id, headers=REGISTRATION, current_key=None, path="/register"):
    headers = dict(headers)
    if current_key:
        headers["X-Miner-Key"] = current_key
    return client.post(path, json={"miner_id": miner_id}, headers=headers)


def key_of(client, miner_id, path="/register") -> str:
    response = register(client, miner_id, path=path)
    assert response.status_code == 200, response.json
    return str(response.json["key"])


def beat(client, miner_id, key, slots=1):
    body = {"miner_id": miner_id, "status": "available", "slots": slots, "free_slots": slots}
    headers = {"Authorization": f"Bearer {key}"}
    return client.post("/heartbeat", json={**body, "models": ["echo"]}, headers=headers)


def live(client) -> set[str]:
    miners = client.get("/metrics/gpus").json["miners"]
    return {m["miner_id"] for m in miners if m["status"] != "offline"}


def entries(client, **params) -> list[dict]:
    response = client.get("/api/v2/audit", query_string=params, headers=ADMIN)
    assert response.status_code == 200, response.json
    return list(response.json["entries"])
