"""Auto-tuning a miner's slot count (``MIA_AUTOTUNE=1``): measure the engine, then choose.

A slot count is a bet on the device: too few slots leave it idle while jobs wait in
Redis, too many queue jobs inside the miner, where dispatch cannot see them, and
make every job slower for no more tokens/s. So at start, before Celery builds the
worker's pool, the miner runs a short ramp on its own engine, in-process:

- concurrency 1, 2, 4, ... up to ``MIA_AUTOTUNE_MAX_SLOTS`` (default 16; the top is
  always included); at each step ``MIA_AUTOTUNE_ROUNDS`` (2) jobs per slot of one
  fixed prompt, ``MIA_AUTOTUNE_TOKENS`` (32) tokens each, greedy;
- each step gives tokens/s (completion tokens of the step over its wall time) and
  the p50 of the jobs' own latencies;
- ``choose`` walks the steps in order and takes the next one only if its tokens/s
  is at least ``MIA_AUTOTUNE_MIN_GAIN`` (0.15: 15 %) above the step taken so far
  and its latency p50 is within ``MIA_AUTOTUNE_MAX_LATENCY_MS`` (0: no bound). The
  first step that fails ends the ramp: the slot count is the last step taken, and
  the reason is ``plateau`` or ``latency`` (``top``: still rising at the top).

llama.cpp is built anew for each step (one context per slot, the cores split
between them: a 4-slot llama.cpp is another engine than a 1-slot one) and once more
for the chosen count; echo and vLLM are built once for the top of the ramp (vLLM's
``max_num_seqs``) and given fewer jobs at once. Each engine, when new, first runs one
short warm-up job per slot, not counted (each llama.cpp context evaluates the
prompt's shared start once; the first vLLM steps are slow).

The worker (``miners.worker``) makes the choice its Celery concurrency and its
heartbeat's ``slots``, reports ``Tuning.report()`` as the heartbeat's ``autotune``
and logs ``Tuning.summary()`` once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from miners.engines import (
    Engine,
    GenerationRequest,
    Loaded,
    complete,
    load_engine,
    preference,
    start_engine,
)
from tasks.settings import Settings

PROMPT = (
    "Tell me a long story about a small restaurant by the sea: the cook, the first "
    "guests of the morning, the fish that came in on the boats, the bread, the soup, "
    "the wine, the storm in the afternoon and the music late at night"
)
WARMUP_TOKENS = 4
# Engines whose build depends on the slot count, so each step needs its own.
SIZED_BY_SLOTS = ("llamacpp",)


@dataclass(frozen=True)
class Point:
    """One step of the ramp."""

    concurrency: int
    tok_s: float
    latency_p50_ms: float


@dataclass(frozen=True)
class Choice:
    slots: int
    reason: str  # plateau | latency | top
    detail: str


@dataclass(frozen=True)
class Tuning:
    """What the ramp measured and chose; ``report()`` is the heartbeat's ``autotune``."""

    choice: Choice
    curve: list[Point]
    seconds: float

    def report(self) -> dict[str, Any]:
        return {
            "slots": self.choice.slots,
            "reason": self.choice.reason,
            "detail": self.choice.detail,
            "seconds": round(self.seconds, 3),
            "curve": [asdict(p) for p in self.curve],
        }

    def summary(self) -> str:
        steps = ", ".join(
            f"{p.concurrency}: {p.tok_s:.1f} tok/s p50 {p.latency_p50_ms:.0f} ms"
            for p in self.curve
        )
        return f"autotune chose {self.choice.slots} slots ({self.choice.detail}); curve {steps}"


def ramp(max_slots: int) -> list[int]:
    """1, 2, 4, ... below ``max_slots``, then ``max_slots`` itself."""
    steps, step = [], 1
    while step < max_slots:
        steps.append(step)
        step *= 2
    return [*steps, max(max_slots, 1)]


def choose(curve: list[Point], min_gain: float, max_latency_ms: float = 0.0) -> Choice:
    """The slot count a measured ramp supports (the rule is in the module's docstring)."""
    taken = curve[0]
    if max_latency_ms and taken.latency_p50_ms > max_latency_ms:
        return Choice(
            taken.concurrency,
            "latency",
            f"p50 {taken.latency_p50_ms:.0f} ms passes the {max_latency_ms:g} ms bound "
            "even at the first step",
        )
    for point in curve[1:]:
        if max_latency_ms and point.latency_p50_ms > max_latency_ms:
            return Choice(
                taken.concurrency,
                "latency",
                f"p50 {point.latency_p50_ms:.0f} ms at {point.concurrency} passes "
                f"the {max_latency_ms:g} ms bound",
            )
        if point.tok_s < taken.tok_s * (1 + min_gain):
            return Choice(
                taken.concurrency,
                "plateau",
                f"{point.tok_s:.1f} tok/s at {point.concurrency} is less than "
                f"{min_gain:.0%} above {taken.tok_s:.1f} at {taken.concurrency}",
            )
        taken = point
    return Choice(taken.concurrency, "top", f"tokens/s still rising at {taken.concurrency}")


def request(index: int, tokens: int) -> GenerationRequest:
    """The ramp's job number ``index`` (a distinct prompt each, as real traffic has)."""
    content = f"{PROMPT} (table {index})."
    return GenerationRequest([{"role": "user", "content": content}], tokens, 0.0, seed=0)


def measure(engine: Engine, concurrency: int, jobs: int, tokens: int) -> Point:
    """Run ``jobs`` jobs, ``concurrency`` at a time, on ``engine``."""

    def one(index: int) -> tuple[float, int]:
        began = time.perf_counter()
        result = complete(engine, request(index, tokens))
        return time.perf_counter() - began, result.completion_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="mia-autotune") as pool:
        done = list(pool.map(one, range(jobs)))
    wall = time.perf_counter() - started
    return Point(
        concurrency,
        round(sum(n for _, n in done) / wall, 2),
        round(statistics.median(s for s, _ in done) * 1000, 2),
    )


def run_ramp(build: Callable[[int], Engine], settings: Settings) -> Tuning:
    """Measure step by step (stopping once the rule has chosen) and choose."""
    started = time.perf_counter()
    curve: list[Point] = []
    warmed: Engine | None = None
    for concurrency in ramp(settings.autotune_max_slots):
        engine = build(concurrency)
        if engine is not warmed:  # not counted
            measure(engine, concurrency, concurrency, WARMUP_TOKENS)
            warmed = engine
        jobs = concurrency * max(settings.autotune_rounds, 1)
        curve.append(measure(engine, concurrency, jobs, settings.autotune_tokens))
        choice = choose(curve, settings.autotune_min_gain, settings.autotune_max_latency_ms)
        if choice.reason != "top":
            break
    return Tuning(choice, curve, time.perf_counter() - started)


def tune(settings: Settings) -> tuple[Loaded, Tuning]:
    """Load the preferred engine, run the ramp on it, and return the engine to serve
    with (built for the chosen slot count) and what was measured."""
    top = max(settings.autotune_max_slots, 1)
    first = 1 if preference(settings)[0] in SIZED_BY_SLOTS else top
    loaded = load_engine(settings.with_overrides(slots=first))
    name = loaded.engine.name
    if name not in SIZED_BY_SLOTS:
        return loaded, run_ramp(lambda _: loaded.engine, settings)
    current = {first: loaded.engine}

    def build(slots: int) -> Engine:
        if slots not in current:
            for old in current.values():
                old.close()
            current.clear()
            current[slots] = start_engine(name, settings.with_overrides(slots=slots))
        return current[slots]

    tuning = run_ramp(build, settings)
    return Loaded(build(tuning.choice.slots), loaded.skipped), tuning
