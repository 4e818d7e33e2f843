"""Prometheus: /metrics counts what happened and reads the fleet from Redis."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


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
