"""Prometheus: /metrics counts what happened and reads the fleet from Redis: the
heartbeats' device and engine figures, the breakers, the heartbeats' age."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from miners.engines.echo import EchoEngine
from miners.engines.vllm_model import cache_figures
from miners.runtime import MinerRuntime
from tasks.breaker import Breakers
from tasks.keys import Keys
from tasks.lua import Scripts
from web.fleet.registry import Heartbeat, Registry

MB = 2**20


def samples(api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = api.get(f"{api.base}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_follow_jobs_and_the_fleet(api, miner):
    miner("0", slots=2)
    before = samples(api)
    for i in range(3):
        assert api.post(f"{api.base}/chat/direct", json={"message": f"m {i}"}).ok
    after = samples(api)
    done = ("mia_jobs_total", (("outcome", "done"),))
    assert after[done] - before.get(done, 0) == 3
    count = ("mia_dispatch_seconds_count", ())
    assert after[count] - before.get(count, 0) == 3
    tokens = ("mia_tokens_generated_total", ())
    assert after[tokens] - before.get(tokens, 0) == 3 * 3  # "echo: m i": 3 pieces each
    assert after[("mia_live_miners", ())] == 1
    assert after[("mia_free_slots", (("miner", "0"),))] == 2
    assert after[("mia_queue_depth", (("queue", "shared"),))] == 0
    assert ("mia_miner_tokens_per_second", (("miner", "0"),)) in after
    # a CPU miner's real figures (its resident memory, the machine's), its echo model
    # holds nothing; no utilization, no GPU, a closed breaker
    m0 = (("miner", "0"),)
    used, total = (
        after[("mia_device_memory_used_bytes", m0)],
        after[("mia_device_memory_total_bytes", m0)],
    )
    assert 10 * MB < used < total
    assert 0 < after[("mia_device_memory_free_bytes", m0)] < total
    assert after[("mia_device_memory_models_bytes", m0)] == 0
    assert ("mia_device_utilization_ratio", (("miner", "0"),)) not in after
    assert not [k for k in after if k[0].startswith("mia_gpu_")]
    assert ("mia_kv_cache_usage_ratio", (("miner", "0"),)) not in after
    assert 0 <= after[("mia_heartbeat_age_seconds", (("miner", "0"),))] < 5
    assert after[("mia_breaker_open", (("miner", "0"),))] == 0
    assert after[("mia_breaker_state", (("miner", "0"), ("state", "closed")))] == 1


def test_gauges_carry_each_heartbeat_s_device_cache_and_breaker_figures(api, redis, settings):
    keys, scripts = Keys(settings.key_prefix), Scripts(redis)
    registry = Registry(redis, keys, 30.0, scripts)
    registry.beat(
        Heartbeat(
            "gpu-a",
            "available",
            4,
            4,
            ["m"],
            "vllm",
            memory={"used_mb": 512.0, "total_mb": 8192.0, "utilization": 0.25},
            seen_at=time.time() - 2.5,
            gpus=[
                {
                    "index": 0,
                    "name": "NVIDIA L4",
                    "uuid": "GPU-1",
                    "used_mb": 512.0,
                    "total_mb": 8192.0,
                    "process_mb": 500.0,
                    "utilization": 0.25,
                    "temperature_c": 51.0,
                },
                {"index": 3, "name": "NVIDIA L4", "uuid": "GPU-4", "total_mb": 8192.0},
            ],
            engine_stats={
                "tokens_per_second": 40.0,
                "ttft_seconds": 0.2,
                "kv_cache_usage": 0.4,
                "prefix_cache_hit_ratio": 0.75,
            },
        )
    )
    registry.beat(Heartbeat("cpu-b", "available", 1, 1, ["m"], "llamacpp", memory={}))
    breakers = Breakers(redis, scripts, keys, settings.with_overrides(breaker_failures=1))
    assert breakers.record("cpu-b", ok=False) == "opened"

    after = samples(api)
    a, b = (("miner", "gpu-a"),), (("miner", "cpu-b"),)
    assert after[("mia_device_memory_used_bytes", a)] == 512 * MB
    assert after[("mia_device_memory_total_bytes", a)] == 8192 * MB
    assert after[("mia_device_utilization_ratio", a)] == 0.25
    assert after[("mia_kv_cache_usage_ratio", a)] == 0.4
    assert after[("mia_prefix_cache_hit_ratio", a)] == 0.75
    assert 2.5 <= after[("mia_heartbeat_age_seconds", a)] < 10
    g0, g3 = (("gpu", "0"), ("miner", "gpu-a")), (("gpu", "3"), ("miner", "gpu-a"))
    assert after[("mia_gpu_temperature_celsius", g0)] == 51
    assert after[("mia_gpu_utilization_ratio", g0)] == 0.25
    assert after[("mia_gpu_memory_miner_bytes", g0)] == 500 * MB
    assert after[("mia_gpu_memory_total_bytes", g3)] == 8192 * MB
    assert ("mia_gpu_temperature_celsius", g3) not in after  # not reported: no sample
    info = (("gpu", "3"), ("miner", "gpu-a"), ("name", "NVIDIA L4"), ("uuid", "GPU-4"))
    assert after[("mia_gpu_info", info)] == 1
    for name in (
        "mia_device_memory_used_bytes",
        "mia_device_utilization_ratio",
        "mia_kv_cache_usage_ratio",
        "mia_prefix_cache_hit_ratio",
    ):
        assert (name, b) not in after  # not in its heartbeat: no sample
    assert after[("mia_breaker_open", a)] == 0
    assert after[("mia_breaker_open", b)] == 1
    state = {
        s: after[("mia_breaker_state", (("miner", m), ("state", s)))]
        for m in ("cpu-b",)
        for s in ("closed", "open", "half_open")
    }
    assert state == {"closed": 0, "open": 1, "half_open": 0}


def test_a_breaker_past_its_cool_down_is_half_open(redis, settings):
    keys, scripts = Keys("gauges"), Scripts(redis)
    tuned = settings.with_overrides(breaker_failures=1, breaker_cooldown_s=0.05)
    breakers = Breakers(redis, scripts, keys, tuned)
    breakers.record("x", ok=False)
    assert breakers.states(["x", "y"]) == {"x": "open", "y": "closed"}
    time.sleep(0.1)
    assert breakers.states(["x", "y"]) == {"x": "half_open", "y": "closed"}
    assert breakers.states([]) == {}


def metric(name: str, value: float) -> SimpleNamespace:
    return SimpleNamespace(name=name, value=value)


@pytest.mark.parametrize(
    ("snapshot", "figures"),
    [
        (  # vLLM's v1 names; counters summed over their labels
            [
                metric("vllm:kv_cache_usage_perc", 0.125),
                metric("vllm:prefix_cache_queries", 300),
                metric("vllm:prefix_cache_queries", 100),
                metric("vllm:prefix_cache_hits", 100),
                metric("vllm:num_requests_running", 2),
                SimpleNamespace(name="vllm:request_success", values=[1, 2]),  # a vector
            ],
            {
                "kv_cache_usage": 0.125,
                "prefix_cache_hit_ratio": 0.25,
                "prefix_cache_queries": 400.0,
                "prefix_cache_hits": 100.0,
            },
        ),
        (  # the older names
            [metric("vllm:gpu_cache_usage_perc", 0.5), metric("vllm:gpu_prefix_cache_hits", 0)],
            {"kv_cache_usage": 0.5},  # no queries yet: no ratio
        ),
        ([], {}),
    ],
)
def test_vllm_s_own_cache_figures_are_read_from_its_metrics(snapshot, figures):
    assert cache_figures(snapshot) == figures


class CachingEngine(EchoEngine):
    """An engine that reports its own cache figures, as the vLLM engine does."""

    def cache_stats(self) -> dict[str, float]:
        return {"kv_cache_usage": 0.3, "prefix_cache_hit_ratio": 0.9}


def test_an_engine_s_own_figures_join_the_heartbeat_s_engine_stats(redis, settings):
    for engine, extra in (
        (CachingEngine(), {"kv_cache_usage", "prefix_cache_hit_ratio"}),
        (EchoEngine(), set()),
    ):
        runtime = MinerRuntime(settings, "gauge-m", engine)
        try:
            stats = runtime.heartbeat()["engine_stats"]
        finally:
            runtime.close()
        assert set(stats) == {"tokens_per_second", "ttft_seconds"} | extra
