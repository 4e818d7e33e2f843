"""A legacy miner's life: it keeps its id across restarts (its state file), stops taking
work at once on SIGTERM (``/unregister_miner``), and is listed in ``/metrics/gpus``
(kind ``legacy``, its last poll) meanwhile. Real miner processes where the process is
what is tested; the Flask client, on the real test Redis, for the listing."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import func, select

from miners.legacy_identity import Identity, StateFile
from scripts.processes import stop, wait_for
from tests.conftest import serving
from tests.legacy_client import bearer, enqueue, get_work, key_of, status, submit
from tests.test_offline_miners import MINER_STATE
from web import create_app
from web.fleet.db import Miner, make_engine, make_sessions
from web.fleet.registry import Heartbeat


def legacy_entries(listing: dict) -> dict[str, dict]:
    """The legacy miners of a /metrics/gpus answer, each as web/openapi.yaml describes."""
    for miner in listing["miners"]:
        MINER_STATE.validate(miner)
    return {m["miner_id"]: m for m in listing["miners"] if m.get("kind") == "legacy"}


def long_polling(redis) -> bool:
    """A web thread of this test's database blocks in its long-poll's BRPOP."""
    db = str(redis.connection_pool.connection_kwargs.get("db", 0))
    return any(c.get("cmd") == "brpop" and str(c.get("db")) == db for c in redis.client_list())


def test_a_legacy_miner_stopped_mid_long_poll_takes_no_new_job_and_exits_at_once(
    api, legacy_miner, redis
):
    old = legacy_miner("old-1", wait_s=20)
    wait_for(lambda: long_polling(redis), 15, "old-1 to long-poll")
    started = time.monotonic()
    old.proc.send_signal(signal.SIGTERM)
    assert old.proc.wait(timeout=5) == 0  # not at the end of its 20 s long-poll
    exit_s = time.monotonic() - started
    listed = legacy_entries(api.get(f"{api.base}/metrics/gpus", timeout=5).json())
    assert listed["old-1"]["status"] == "offline"
    # the web tier's side of that long-poll ended too: a job now is not leased to old-1
    job_id = api.post(f"{api.base}/chat", json={"message": "after"}, timeout=5).json()["job_id"]
    legacy_miner("old-2", poll_s=0.1)

    def done() -> dict | None:
        found = api.get(f"{api.base}/jobs/{job_id}", timeout=5).json()
        return found if found["status"] == "done" else None

    # a lease to the gone old-1 would hold the job for MIA_LEASE_S (30 s)
    result = wait_for(done, 10, "old-2 to run the job")["result"]  # type: ignore[index]
    assert result["miner_id"] == "old-2"
    assert "stopped after 0 jobs" in old.output()
    print(f"legacy miner exited {1000 * exit_s:.0f} ms after SIGTERM, mid long-poll")


def registered_ids(output: str) -> list[str]:
    return re.findall(r"registered legacy miner ([A-Za-z0-9_.-]+)", output)


def legacy_rows(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with make_sessions(engine)() as session:
            query = select(func.count()).select_from(Miner).where(Miner.kind == "legacy")
            return int(session.scalar(query) or 0)
    finally:
        engine.dispose()


def test_legacy_miners_keep_their_ids_across_restarts(legacy_miner, settings, tmp_path):
    """Without --miner-id, two miners on one machine get an id each, and the same two
    again after a restart: no new row per restart."""
    data = str(tmp_path / "var")

    def both() -> set[str]:
        found = [legacy_miner("", poll_s=0.2, MIA_DATA_DIR=data) for _ in range(2)]
        ids = {registered_ids(m.output())[-1] for m in found}
        for miner in found:
            stop(miner.proc)
        return ids

    first = both()
    assert len(first) == 2
    rows = legacy_rows(settings.database_url)
    assert both() == first
    assert legacy_rows(settings.database_url) == rows
    assert sorted(p.name for p in Path(data).glob("*.json")) == [
        "legacy-auto-0.json",
        "legacy-auto-1.json",
    ]
    assert all(p.stat().st_mode & 0o077 == 0 for p in Path(data).glob("*.json"))


def test_a_kept_key_renews_the_id_where_the_token_alone_may_not(settings, tmp_path):
    """MIA_LEGACY_OPEN_RENEWAL=0: only the id's current key renews it, and the state
    file has it."""
    app = create_app(settings.with_overrides(legacy_open_renewal=0))
    try:
        with serving(app) as base:
            mine = settings.with_overrides(api_url=base, data_dir=str(tmp_path))
            state = StateFile.claim(mine)
            first = Identity(mine, state.read()[0], state)
            first.register()
            other = StateFile.claim(mine)  # held: the next miner gets a file of its own
            assert (state.path.name, other.path.name) == (
                "legacy-auto-0.json",
                "legacy-auto-1.json",
            )
            other.release()
            state.release()
            again = StateFile.claim(mine)  # a restart
            second = Identity(mine, again.read()[0], again)
            second.register()
            assert second.miner_id == first.miner_id and second.key != first.key
            stranger = Identity(mine, first.miner_id)  # no state file: no key to show
            try:
                stranger.register()
                raise AssertionError("renewed without the key")
            except RuntimeError as exc:
                assert "409" in str(exc)
            again.release()
    finally:
        app.extensions["mia"].housekeeper.close()
        app.extensions["mia"].waiter.close()


def test_metrics_gpus_lists_legacy_miners_with_their_last_poll(app, client, redis):
    registry = app.extensions["mia"].registry
    registry.beat(Heartbeat("push-1", "available", 1, 1, ["m"], "echo", seen_at=time.time()))
    key = key_of(client, "old-7")
    before = time.time()
    assert get_work(client, key).status_code == 204

    def entry() -> dict:
        return legacy_entries(client.get("/metrics/gpus").json)["old-7"]

    idle = entry()
    assert (idle["kind"], idle["status"], idle["queue"], idle["in_flight"]) == (
        "legacy",
        "available",
        "shared",
        0,
    )
    assert before <= idle["last_poll"] <= time.time()
    (push,) = [m for m in client.get("/metrics/gpus").json["miners"] if m["miner_id"] == "push-1"]
    assert push["kind"] == "push" and "last_poll" not in push

    job_id = enqueue(client)
    work = get_work(client, key).json
    assert (entry()["status"], entry()["in_flight"]) == ("busy", 1)
    done = {"job_id": job_id, "lease_id": work["lease_id"], "response": "ok"}
    assert submit(client, key, done).status_code == 200
    assert entry()["status"] == "available"
    silent = app.extensions["mia"].pollers.listing(now=time.time() + 25)  # 20 + 2 x 2 s
    assert [m.status for m in silent if m.miner_id == "old-7"] == ["offline"]


def test_a_stopping_legacy_miner_gets_no_new_lease_until_it_registers_again(client):
    key = key_of(client, "old-8")
    answer = client.post("/unregister_miner", headers=bearer(key))
    assert answer.status_code == 200 and answer.json["status"] == "offline"
    assert legacy_entries(client.get("/metrics/gpus").json)["old-8"]["status"] == "offline"
    job_id = enqueue(client)
    assert get_work(client, key).status_code == 204
    assert status(client, job_id)["status"] == "queued"
    assert client.post("/unregister_miner").status_code == 401  # a miner's key only
    key = key_of(client, "old-8")  # back
    assert get_work(client, key).json["job_id"] == job_id


def test_unregister_ends_the_miners_long_poll_at_once(api, redis):
    base = api.base  # type: ignore[attr-defined]
    token = {"Authorization": "Bearer test-registration-token"}
    key = api.post(f"{base}/register_miner", json={"miner_id": "old-9"}, headers=token).json()[
        "key"
    ]
    answers: list[requests.Response] = []
    poll = threading.Thread(
        target=lambda: answers.append(
            requests.get(f"{base}/get_work", params={"wait": 15}, headers=bearer(key), timeout=30)
        )
    )
    poll.start()
    wait_for(lambda: long_polling(redis), 5, "the long-poll")
    started = time.monotonic()
    assert api.post(f"{base}/unregister_miner", headers=bearer(key)).status_code == 200
    poll.join(10)
    assert [a.status_code for a in answers] == [204]
    assert time.monotonic() - started < 2.0  # not the 15 s it asked to wait
