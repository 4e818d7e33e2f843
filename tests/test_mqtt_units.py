"""The MQTT gateway's parts on their own: the stats summary, the health report and its
HTTP endpoint, the broker URL and TLS settings, the client's identity, and the token
bucket (rate_limit.lua, on the real test Redis)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tasks.errors import ConfigError, ValidationError
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.settings import Settings
from tests.mqtt_client import healthz
from web.mqtt import health
from web.mqtt.broker import Broker, session
from web.mqtt.limits import RateLimit, RateLimited, client_identity
from web.mqtt.stats import Stats, Window, line, summary

# -- the 60 s summary -------------------------------------------------------------------


def test_the_summary_is_count_average_latency_and_error_rate():
    found = summary(Window(requests=8, errors=2, limited=1, latency_ms=100.0))
    assert found == {
        "requests": 8,
        "average_ms": 12.5,
        "errors": 2,
        "error_rate": 0.25,
        "rate_limited": 1,
    }
    assert line(found, 60) == (
        "mqtt summary (60 s): 8 requests, average 12.5 ms, 2 errors "
        "(error rate 0.250, 1 rate-limited)"
    )


def test_a_quiet_period_sums_up_to_zeros_not_a_division_by_zero():
    assert summary(Window()) == {
        "requests": 0,
        "average_ms": 0.0,
        "errors": 0,
        "error_rate": 0.0,
        "rate_limited": 0,
    }


def test_stats_count_in_flight_and_periods():
    stats = Stats()
    for _ in range(3):
        stats.received()
    assert stats.in_flight == 3
    stats.acknowledged(True, 10.0)
    stats.acknowledged(False, 30.0, limited=True)
    stats.abandoned()  # shutting down: left to the broker
    assert stats.in_flight == 0
    ended = stats.rotate()
    assert (ended["requests"], ended["average_ms"], ended["error_rate"]) == (2, 20.0, 0.5)
    stats.received()
    stats.acknowledged(True, 5.0)
    assert stats.recent()["requests"] == 3  # the last period and this one
    assert stats.rotate()["requests"] == 1
    assert stats.rotate()["requests"] == 0
    assert stats.recent()["requests"] == 0


# -- health ---------------------------------------------------------------------------


def test_health_is_ready_only_connected_and_subscribed():
    state = health.Health(Stats())
    assert state.report() == (
        503,
        {
            "broker": "connecting",
            "subscribed": False,
            "in_flight": 0,
            "error_rate": 0.0,
            "requests": 0,
        },
    )
    state.connection("connected")
    assert state.report()[0] == 503  # no SUBACK yet
    state.subscription(True)
    assert state.ready and state.report()[0] == 200
    state.lost()
    code, body = state.report()
    assert (code, body["broker"], body["subscribed"]) == (503, "disconnected", False)
    state.connection("refused")
    state.lost()  # the broker said why: that stays
    assert state.report()[1]["broker"] == "refused"
    state.subscription(True)  # a late SUBACK does not make a refused gateway ready
    assert not state.ready


def test_the_health_endpoint_answers_over_http():
    state = health.Health(Stats())
    server = health.serve("127.0.0.1", 0, state.report)
    try:
        assert healthz(server.port)[0] == 503
        state.connection("connected")
        state.subscription(True)
        code, body = healthz(server.port)
        assert code == 200 and body["broker"] == "connected" and body["subscribed"] is True
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert err.value.code == 404
        err.value.close()
    finally:
        server.close()


# -- the broker's address -------------------------------------------------------------


def test_broker_urls_plain_and_tls():
    plain = Broker.from_settings(Settings(mqtt_url="mqtt://broker"))
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker", 1883, False, None)
    tls = Broker.from_settings(
        Settings(
            mqtt_url="mqtts://gw:p%40ss%3Aw%2Frd@broker",
            mqtt_tls_ca_file="ca.pem",
            mqtt_tls_cert_file="gw.pem",
            mqtt_tls_key_file="gw.key",
        )
    )
    assert (tls.port, tls.tls, tls.username, tls.password) == (8883, True, "gw", "p@ss:w/rd")
    assert str(tls) == "mqtts://broker:8883"


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"mqtt_url": "http://broker"}, "mqtt:// or mqtts://"),
        ({"mqtt_url": "mqtt://broker", "mqtt_tls_ca_file": "ca.pem"}, "not mqtts://"),
        ({"mqtt_url": "mqtts://broker", "mqtt_tls_cert_file": "gw.pem"}, "go together"),
    ],
)
def test_broker_settings_that_cannot_work_are_refused(changes, says):
    with pytest.raises(ConfigError, match=says):
        Broker.from_settings(Settings(**changes))


# -- who the client is ----------------------------------------------------------------


def test_a_client_is_its_client_id_else_its_session():
    assert client_identity({"client_id": "kiosk-3"}, "s1") == "client:kiosk-3"
    assert client_identity({}, "s1") == "session:s1"
    for bad in ("", "a b", "x" * 65, 7, "a/b"):
        with pytest.raises(ValidationError) as err:
            client_identity({"client_id": bad}, "s1")
        assert err.value.details["field"] == "client_id"


# -- the token bucket -----------------------------------------------------------------


def bucket(redis, limit: int = 3, period_s: float = 60.0, burst: int = 3) -> RateLimit:
    return RateLimit(redis, Scripts(redis), Keys("mia"), limit, period_s, burst)


def test_the_bucket_lets_a_burst_through_then_names_the_limit(redis):
    limit = bucket(redis, limit=30, burst=3)
    for _ in range(3):
        limit.take("p", "client:a")
    with pytest.raises(RateLimited) as err:
        limit.take("p", "client:a")
    reply = err.value.to_dict()
    assert reply["error"] == "rate limit: 30 messages per 60 s per client (bursts of up to 3)"
    assert reply["code"] == "rate_limited"
    assert reply["limit"] == {"messages": 30, "period_s": 60.0, "burst": 3}
    assert reply["client"] == "client:a"
    assert 0 < reply["retry_after_s"] <= 2.0  # one token every 2 s
    limit.take("p", "client:b")  # every client has a bucket of its own
    limit.take("q", "client:a")  # and per project
    ttl = redis.pttl("mia:rate:p:client:a")
    assert 0 < ttl <= 2000 * 3 + 1000  # gone once it would be full again


def test_the_bucket_refills_with_time(redis):
    limit = bucket(redis, limit=60, burst=2)  # one token a second
    limit.take("p", "c")
    limit.take("p", "c")
    with pytest.raises(RateLimited):
        limit.take("p", "c")
    last = int(redis.hget("mia:rate:p:c", "ts"))
    redis.hset("mia:rate:p:c", "ts", last - 1500)  # 1.5 s ago: 1.5 tokens back
    limit.take("p", "c")
    with pytest.raises(RateLimited):
        limit.take("p", "c")  # half a token is not one


def test_no_limit_touches_nothing(redis):
    limit = bucket(redis, limit=0)
    for _ in range(10):
        limit.take("p", "c")
    assert redis.keys("mia:rate:*") == []


def test_the_gateways_session_expires_and_bounds_what_the_broker_sends_at_once():
    properties = session(60, 32)
    assert (properties.SessionExpiryInterval, properties.ReceiveMaximum) == (60, 32)
    assert session(0, 100_000).ReceiveMaximum == 65535  # MQTT v5's largest
    for bad in (-1, 2**32):
        with pytest.raises(ConfigError, match="MIA_MQTT_SESSION_EXPIRY_S"):
            session(bad, 32)
