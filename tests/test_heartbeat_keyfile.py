"""The heartbeat loop outlives a key file it cannot write, against the real web tier.

In a container whose key volume its user may not write, writing the key used to raise
out of the heartbeat thread: the thread died, the worker lived on taking ``shared``
work, and the miner never joined dispatch. Tests run as root, for whom permission bits
do not apply, so the unwritable path here is one under a regular file (the write raises
NotADirectoryError, an OSError, for root too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from miners.heartbeat import HeartbeatSender
from scripts.processes import wait_for
from tests.auth_client import new_id
from tests.conftest import TOKEN
from tests.miner_processes import live_miner_ids

INTERVAL_S = 0.1
WRITE_FAILED = "cannot keep miner"


def heartbeat_body(miner_id: str) -> dict[str, object]:
    return {
        "miner_id": miner_id,
        "status": "available",
        "slots": 1,
        "free_slots": 1,
        "models": ["echo"],
    }


@pytest.fixture
def senders(live_server: str, redis: object) -> Iterator[list[HeartbeatSender]]:
    started: list[HeartbeatSender] = []
    yield started
    for sender in started:
        sender.stop()


def start(senders: list[HeartbeatSender], sender: HeartbeatSender) -> HeartbeatSender:
    senders.append(sender)
    sender.start()
    return sender


def stays_live(sender: HeartbeatSender, settings, miner_id: str) -> None:
    """It beats on for longer than the heartbeat TTL, and is live at the end of it."""
    wait_for(lambda: miner_id in live_miner_ids(settings), 10, f"{miner_id} to join")
    enough = sender.beats + int(settings.heartbeat_ttl_s / INTERVAL_S) + 5
    wait_for(lambda: sender.beats >= enough, 30, f"{enough} heartbeats")
    assert sender.is_alive()
    assert miner_id in live_miner_ids(settings)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def test_an_unwritable_key_file_leaves_the_miner_beating_and_is_written_later(
    senders, settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="miners.heartbeat")
    blocker = tmp_path / "afile"
    blocker.write_text("a file where the key's directory should be")
    key_file = blocker / "miner.key"
    miner_id = new_id("kf")
    sender = start(
        senders,
        HeartbeatSender(
            settings.api_url,
            miner_id,
            TOKEN,
            lambda: heartbeat_body(miner_id),
            INTERVAL_S,
            key_file=key_file,
        ),
    )
    stays_live(sender, settings, miner_id)
    # tried again on every tick (dozens by now), logged once
    assert logged(caplog, WRITE_FAILED) == 1

    # the operator fixes the volume: the key the web tier gave is written at the next tick
    blocker.unlink()
    blocker.mkdir()
    wait_for(key_file.is_file, 10, "the key file to be written")
    assert (key_file.stat().st_mode & 0o777) == 0o600
    wait_for(lambda: logged(caplog, "key is kept in") == 1, 5, "the recovery to be logged")
    kept = key_file.read_text()
    answer = requests.post(
        f"{settings.api_url}/heartbeat",
        json=heartbeat_body(miner_id),
        headers={"Authorization": f"Bearer {kept}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text  # the very key this miner beats with
    assert logged(caplog, WRITE_FAILED) == 1
    assert miner_id in live_miner_ids(settings)


def test_any_failing_tick_is_logged_once_and_the_loop_beats_on(
    senders, settings, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="miners.heartbeat")
    miner_id = new_id("kt")
    calls = 0

    def body() -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise RuntimeError("the runtime could not say what it is doing")
        return heartbeat_body(miner_id)

    sender = start(senders, HeartbeatSender(settings.api_url, miner_id, TOKEN, body, INTERVAL_S))
    stays_live(sender, settings, miner_id)
    assert logged(caplog, "heartbeat tick failed") == 1
    assert logged(caplog, "heartbeat ticks run again") == 1


def test_a_miner_worker_with_an_unwritable_key_file_joins_dispatch(miner, tmp_path: Path):
    """The whole worker, as in a container whose key volume it may not write."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    found = miner("kw1", MIA_MINER_KEY_FILE=str(blocker / "miner.key"))  # waits until live
    assert WRITE_FAILED in found.output()
    assert found.proc.poll() is None
