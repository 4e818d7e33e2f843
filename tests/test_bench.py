"""The bench's pieces for issue 25: the stock stack it compares with (``bench.naive``,
started by ``bench.versus`` as real gunicorn and Celery processes) and its two
frameworks measured alone (``bench.floor``), the CPU roles that
keep its processes apart from the product's, its report and targets, and the
per-request hooks measured on and off (``bench.hooks``, real subprocesses); and the engine
rows' first-token samples, cold and the same on both sides (``bench.prompts``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Generator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from bench import engines, floor, hooks, prompts, sections, throughput, versus, versus_report
from tasks.settings import Settings


def test_the_stock_stack_answers_chat_direct_through_a_real_celery_worker(
    redis: redis_lib.Redis, redis_url: str, tmp_path: Path
) -> None:
    with versus.naive_stack(redis_url, tmp_path) as port:
        found = versus.interleaved(versus.posts({"a": port, "b": port}), 3)
    assert [len(v) for v in found.values()] == [3, 3]
    assert all(ms > 0 for ms in found["a"] + found["b"])
    # The worker ran them: solo pool, acks_late (the message left kombu's unacked hash).
    assert "solo" in (tmp_path / "naive-worker.log").read_text()
    assert redis.hlen("unacked") == 0


def test_the_frameworks_alone_each_half_real_and_without_the_other(
    redis: redis_lib.Redis, redis_url: str, tmp_path: Path
) -> None:
    with versus.naive_stack(redis_url, tmp_path) as port:
        results = set(redis.keys(f"{floor.RESULTS}*"))  # the stack's own check of its worker
        # The front door: the same view, no task published, none run.
        assert versus.post(port, floor.PATH) > 0
        assert set(redis.keys(f"{floor.RESULTS}*")) == results
        with floor.granian_front_door(redis_url, tmp_path) as granian:
            assert granian is not None  # requirements-dev.txt has it
            assert versus.post(granian, floor.PATH) > 0
        # The Celery half: apply_async's own message, run by the real worker, answered;
        # each call returns once its own result is stored, whatever else is published
        # meanwhile (the stock stack's own results, on the same subscription).
        taken, ran = [], set()
        with floor.CeleryRoundTrip(redis_url) as celery_half:
            assert celery_half.template["headers"]["task"] == "bench.naive.echo"
            for _ in range(3):
                before = set(redis.keys(f"{floor.RESULTS}*"))
                taken.append(celery_half())
                mine = set(redis.keys(f"{floor.RESULTS}*")) - before
                assert len(mine) == 1  # its own, stored before its PUBLISH was heard
                ran |= mine
                versus.post(port)  # a stock result published between two calls
        stock_results = set(redis.keys(f"{floor.RESULTS}*")) - results - ran
        assert len(stock_results) == 3 and all(ms > 0 for ms in taken)
        stored = [json.loads(redis.get(key) or b"{}") for key in ran]
        assert {(r["status"], r["result"]) for r in stored} == {("SUCCESS", "Hello")}
        assert redis.hlen("unacked") == 0  # acknowledged, as apply_async's would be
        assert redis.llen("naive") == 0  # nothing pushed twice, nothing left behind
        # The load on the front door alone: bench.load posts where it is told to.
        load = throughput.load(port, 4, 0.5, 0.2, floor.PATH)
        assert load["errors"] == 0 and load["requests"] > 0
        assert set(redis.keys(f"{floor.RESULTS}*")) - results == ran | stock_results
    assert not redis.keys("*naive-floor-*")  # the capture's queue and binding are gone


def test_the_cpu_roles_keep_the_stock_stack_apart_from_the_product() -> None:
    assert throughput.role_of("gunicorn --bind x bench.naive:create_app()") == "stock web"
    assert throughput.role_of("celery -A bench.naive worker -P solo -Q naive") == "stock worker"
    assert throughput.role_of("gunicorn --bind x web:create_app()") == "web"
    assert throughput.role_of("python -m celery -A miners worker -Q gpu-0") == "miner"
    assert throughput.role_of("redis-server 127.0.0.1:1") == "redis"


def figures(product_p50: float, stock_rps: float, front_door: float = 1.0) -> dict[str, Any]:
    """A run's figures: the stock stack at 5 ms, its Celery round trip alone at 2 ms, its
    front door alone at ``front_door`` ms (under granian 0.2 ms less)."""

    def side(rps: float, cpu: dict[str, float]) -> dict[str, Any]:
        runs = [{"req_per_s": rps, "errors": 0, "p50_ms": 100.0, "p99_ms": 200.0, "cpu": cpu}]
        return versus.mean_of(runs)

    measured = {"load generator": 0.2, "web": 1.7, "miner": 1.4, "redis": 0.3}
    measured |= {"stock web": 2.0, "stock worker": 1.0}
    alone = {"load generator": 0.1, "stock web": 0.4, "stock worker": 0.0, "redis": 0.0}
    latency = {
        "product": [product_p50] * 3,
        "stock": [5.0] * 3,
        floor.FRONT_DOOR: [front_door] * 3,
        floor.GRANIAN: [front_door - 0.2] * 3,
        floor.CELERY: [2.0] * 3,
    }
    latency |= floor.added(latency)
    tp = {
        "product": side(800.0, versus.side_cpu("product", {"cpu_ms_per_request": measured})),
        "stock": side(stock_rps, versus.side_cpu("stock", {"cpu_ms_per_request": measured})),
        floor.FRONT_DOOR: side(
            5000.0, versus.side_cpu(floor.FRONT_DOOR, {"cpu_ms_per_request": alone})
        ),
    }
    lat = {s: versus.stats(times) for s, times in latency.items()}
    return {
        "samples": 3,
        "warmup": 1,
        "latency": lat,
        "throughput": tp,
        "ratios": versus_report.ratios(lat, tp),
    }


def test_each_side_counts_only_its_own_processes_cpu() -> None:
    found = figures(2.0, 400.0)
    product = found["throughput"]["product"]["cpu_ms_per_request"]
    stock = found["throughput"]["stock"]["cpu_ms_per_request"]
    assert product == {
        "web": 1.7,
        "miner / worker": 1.4,
        "redis": 0.3,
        "load generator": 0.2,
        "all": 3.6,
    }
    assert stock["web"] == 2.0 and stock["miner / worker"] == 1.0
    assert stock["all"] == 3.5
    text = versus_report.markdown(found)
    assert "| stock stack | 400.0 |" in text and "**2.0x**" in text
    # The frameworks alone: 0.4 ms of web CPU for the front door, 1.0 for the worker.
    assert floor.cpu(found["throughput"]) == {
        "front_door_web": 0.4,
        "stock_worker": 1.0,
        "frameworks": 1.4,
        "product_budget_at_1.5x": 2.333,
    }
    assert "spend at least 1.4 ms of CPU per request" in text


def test_the_targets_against_the_stock_stack() -> None:
    met = versus_report.targets(figures(2.0, 400.0))  # 0.4x the latency, 2x the requests/s
    assert met["chat_p50_le_0.6x_stock"] and met["chat_req_per_s_ge_1.5x_stock"]
    missed = versus_report.targets(figures(5.0, 700.0))
    assert not missed["chat_p50_le_0.6x_stock"] and not missed["chat_p99_le_0.6x_stock"]
    assert not missed["chat_req_per_s_ge_1.5x_stock"]


def test_each_floor_adds_the_two_halves_of_the_same_round() -> None:
    latency = {floor.FRONT_DOOR: [1.0, 2.0], floor.CELERY: [10.0, 20.0], "stock": [9.0, 9.0]}
    assert floor.added(latency) == {"floor": [11.0, 22.0]}  # no granian: no floor of it
    latency[floor.GRANIAN] = [0.5, 0.25]
    assert floor.added(latency)["floor, granian"] == [10.5, 20.25]


def test_the_frameworks_alone_ratio_takes_the_cheaper_front_door() -> None:
    # 1.0 + 2.0 ms alone of the stock's 5.0: 0.6x; under granian 2.8 ms: 0.56x.
    found = figures(4.0, 400.0, front_door=1.0)
    assert found["ratios"]["floor_p50"] == 0.6 and found["ratios"]["floor, granian_p50"] == 0.56
    assert versus_report.targets(found)["frameworks_alone_vs_stock_p50_ratio"] == 0.56
    assert not versus_report.targets(found)["frameworks_alone_above_0.6x_stock"]
    # A front door of 1.4 ms: 0.64x under granian, so 0.6x is below what they take alone.
    slow = versus_report.targets(figures(4.0, 400.0, front_door=1.4))
    assert (
        slow["frameworks_alone_above_0.6x_stock"]
        and slow["frameworks_alone_vs_stock_p50_ratio"] == 0.64
    )
    text = versus_report.markdown(found)
    assert (
        "| **front door under granian + Celery, added round by round / stock** | | **0.56x**"
        in text
    )


def test_every_hook_is_measured_on_and_tracing_really_exports(tmp_path: Path) -> None:
    found = hooks.run(iterations=1000)
    for key, _label in hooks.HOOKS:
        assert found[key]["median_us"] > 0 and found[key]["cpu_us"] > 0, key
    assert found["otlp_exports"] > 0  # tracing on sent its spans somewhere
    assert found["flask"]["on_us"] > 0 and found["flask_tracing"]["on_us"] > 0
    checks = hooks.targets(found)
    assert set(checks) == {f"hook_{key}_le_0.1ms" for key, _ in hooks.HOOKS}
    found["web_log_lines_per_request"] = 0.0
    assert "request id" in hooks.markdown(found, chat_p50_ms=4.0)


def test_lines_per_request_counts_what_the_log_grew_by(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_text("started\n")

    def send(n: int) -> None:
        with log.open("a") as f:
            f.write("line\n" * (n // 2))

    assert hooks.lines_per_request(log, 10, send) == 0.5


def test_the_first_token_samples_are_the_same_cold_prompts_on_both_sides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[tuple[str, list[str]]] = []  # (side, messages), in the order sent

    class Direct:
        def __init__(self, name: str, python: str) -> None:
            pass

        def sample(self, message: str) -> float:
            asked.append(("direct", [message]))
            return 1.0

        def close(self) -> float:
            return 0.5

    def push(host: str, port: int, messages: list[str]) -> list[float]:
        asked.append(("push", messages))
        return [2.0] * len(messages)

    monkeypatch.setattr(engines, "DirectServer", Direct)
    monkeypatch.setattr(engines, "sse_ttft", push)
    monkeypatch.setattr(engines, "throughput", lambda *args: 1.0)
    monkeypatch.setattr(sections, "running", lambda *args: nullcontext())
    monkeypatch.setattr(sections, "wait_for", lambda *args: None)
    settings = Settings(redis_url="redis://127.0.0.1:1/9")
    row = sections.engine_row(settings, tmp_path, "llamacpp", "python", 40, quick=False)
    (_, warmup), *samples = asked
    assert warmup == prompts.warmup_prompts()  # the miner's, as the in-process engine's
    # One by one, alternating: in-process, then the very same message through the miner.
    assert [side for side, _ in samples] == ["direct", "push"] * 40
    assert all(a == b for (_, a), (_, b) in zip(samples[::2], samples[1::2], strict=True))
    every = [m for _, (m,) in samples[::2]]
    assert len(set(every)) == 40 and not set(every) & set(warmup)  # each one cold
    assert row.summary()["push_ttft_overhead_ms"] == 1.0 and row.load_s == 0.5


def test_each_first_token_sample_differs_from_every_other_at_its_first_token() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from chat_service.prompts import direct_messages
    from miners.engines.llamacpp import bundled_model_path

    llm = llama_cpp.Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    template = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], "", "")
    messages = (
        prompts.warmup_prompts()
        + prompts.measured_prompts(len(prompts.NONCES) - prompts.WARMUP, 1)[0]
    )
    texts = [template(messages=direct_messages(m)).prompt for m in messages]  # type: ignore[arg-type]
    tokens = [llm.tokenize(text.encode(), False, True) for text in texts]
    shared = 0  # what /chat/direct sends before the message: the same for every request
    while len({t[shared] for t in tokens}) == 1:
        shared += 1
    assert llm.detokenize(tokens[0][:shared]).decode().endswith("user\n")
    assert len({t[shared] for t in tokens}) == len(messages)  # then no two alike


def test_the_in_process_side_runs_the_prompts_it_is_given() -> None:
    chunk = prompts.measured_prompts(6, 2)[1]
    load_s, ttft = engines.direct_ttft("echo", sys.executable, chunk)
    assert len(ttft) == 3 and all(ms > 0 for ms in ttft)
    served = engines.DirectServer("echo", sys.executable)
    assert all(served.sample(m) > 0 for m in chunk)
    assert served.close() >= 0  # it checked the digest of what it ran
    with pytest.raises(ValueError, match="cold samples"):
        prompts.measured_prompts(len(prompts.NONCES), 1)


def test_the_in_process_sample_reads_its_answer_to_the_end_as_the_push_side_does() -> None:
    """Closed at its first piece, an engine would still be working on its next one while
    the push side's sample ran (vLLM on the CPU: 19 to 21 ms of the push share, 2026-12-07)."""
    from bench import direct
    from miners.engines import GenerationRequest, GenerationResult, Stream

    made: list[str] = []

    class Counting:
        name = "counting"
        models: tuple[str, ...] = ("counting",)

        def memory_mb(self) -> dict[str, float]:
            return {}

        def close(self) -> None:
            pass

        def stream(self, request: GenerationRequest) -> Stream:
            def produce(stream: Stream) -> Generator[str, None, GenerationResult]:
                for i in range(request.max_tokens):
                    made.append(str(i))
                    yield str(i)
                return GenerationResult("".join(made), 1, len(made), "length")

            return Stream(produce)

    assert direct.first_token_ms(Counting(), "Hello") > 0
    assert made == [str(i) for i in range(8)]  # all of max_tokens, not one
