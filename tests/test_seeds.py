"""The seed documents' request examples, replayed as written (../shared/seeds/).

- Seed 000 (the push architecture): its curl lines, copied verbatim below; only the
  production host is replaced by the test server's.
- Seed 001 (the /api/v2 migration guide): tests/test_api_v2_seed001.py runs its
  Python examples, with the one documented change (the admin token header).
- Seed 004 (the MQTT teaching projects): its topics, two-turn conversations with each
  of its five projects over MQTT: tests/test_mqtt_projects.py.
- Seed 003 (the torch-free gateway) has no request example; tests/test_torch_free.py
  proves the gateway imports no torch.
- Seed 002 describes another product (``python -m mm_orch.main``, its Prometheus port
  9090 and an OTLP collector on 4317): none of its examples is a request to this one.
"""

from __future__ import annotations

import json
import shlex

import pytest
import requests

PRODUCTION = "https://mia-backend-production.up.railway.app"

# Seed 000, "Monitor GPU Availability" and "Test Direct Push", verbatim.
SEED_000 = [
    "curl https://mia-backend-production.up.railway.app/metrics/gpus",
    """curl -X POST https://mia-backend-production.up.railway.app/chat/direct \\
  -H "Content-Type: application/json" \\
  -d '{"message": "Hello", "context": {}}'""",
]


def replay(line: str, base: str) -> requests.Response:
    """Send what a curl command line sends (-X, -H, -d and the URL)."""
    words = shlex.split(line.replace("\\\n", " "))
    assert words[0] == "curl"
    method, headers, data, url = "GET", {}, None, ""
    args = iter(words[1:])
    for word in args:
        if word == "-X":
            method = next(args)
        elif word == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data, method = next(args), method if method != "GET" else "POST"
        else:
            url = word.replace(PRODUCTION, base)
    return requests.request(method, url, headers=headers, data=data, timeout=30)


@pytest.mark.parametrize("line", SEED_000, ids=["metrics-gpus", "chat-direct"])
def test_seed_000s_curl_lines_work_as_written(api, miner, line):
    miner("0")
    response = replay(line, api.base)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    body = response.json()
    if "/metrics/gpus" in line:
        (gpu,) = body["miners"]
        assert (gpu["miner_id"], gpu["status"]) == ("0", "available")
        assert isinstance(gpu["last_heartbeat"], float)
    else:
        assert body["response"] == "echo: Hello"
        assert json.loads(line.split("-d '")[1].rstrip("'")) == {"message": "Hello", "context": {}}


def test_seed_000s_endpoints_all_exist(client):
    """Its "Endpoints Overview": old and new side by side; none is gone (OPTIONS of a
    route answers 200, of a missing one 404)."""
    old = ["/register_miner", "/get_work", "/chat"]
    new = ["/register", "/heartbeat", "/chat/direct", "/metrics/gpus"]
    for path in old + new:
        assert client.options(path).status_code == 200, path
