"""web.mqtt.lanes: one turn at a time per session, the rest waiting without a worker."""

from __future__ import annotations

from web.mqtt.lanes import Lanes


def test_a_session_runs_one_message_at_a_time_in_arrival_order():
    lanes: Lanes[str] = Lanes()
    assert lanes.enter(("maze", "s1"), "a") is True
    assert lanes.enter(("maze", "s1"), "b") is False
    assert lanes.enter(("maze", "s1"), "c") is False
    assert lanes.enter(("maze", "s2"), "x") is True  # another session: at once
    assert lanes.enter(("racing", "s1"), "y") is True  # the same id in another project
    assert len(lanes) == 2
    assert lanes.leave(("maze", "s1")) == "b"
    assert lanes.leave(("maze", "s1")) == "c"
    assert lanes.leave(("maze", "s1")) is None  # free again
    assert lanes.enter(("maze", "s1"), "d") is True


def test_messages_without_a_session_always_run():
    lanes: Lanes[str] = Lanes()
    assert lanes.enter(None, "a") is True and lanes.enter(None, "b") is True
    assert lanes.leave(None) is None
