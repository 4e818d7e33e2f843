"""The auto-tuning section of ``make bench``: the slot count each engine chooses, and why.

    python -m bench.autotune [--quick] [--json]

Runs ``miners.autotune.tune`` (what a miner with ``MIA_AUTOTUNE=1`` runs at start) once
per engine, each in a subprocess of the engine's own environment, and shows the
measured ramp (tokens/s and p50 job latency per concurrency) and the choice:

- ``echo``, 100 ms per 32-token job on a pretend device that runs 4 jobs at once
  (``MIA_ECHO_BATCH=4``): past 4 jobs the pieces take turns, so tokens/s is flat
  and latency doubles. The device's width is a parameter of the demo, not a finding;
  the row shows the rule finds it.
- ``llamacpp``: SmolLM2-135M on this machine's cores, one llama.cpp context per slot
  with the cores split between them (the engine is rebuilt for each step).
- ``vllm`` (when ``make test-vllm`` built ``.venv-vllm``): the same model on vLLM's
  CPU build, one engine batching every slot's jobs.

The last column judges the same curve with a 2 s bound on the p50 job latency
(``MIA_AUTOTUNE_MAX_LATENCY_MS=2000``: 32 tokens in 2 s, about twice reading speed),
which is exact without another ramp: a bound only stops the walk sooner.

Each new engine first runs one short warm-up job per slot, not counted. The ramp goes
up to 8 slots (the miner's default is 16; 8 keeps this section within about two
minutes with vLLM's start); ``--quick`` runs echo alone (a few seconds). Timings on a
shared 2-core machine are noisy (the load average is reported with them); the choice
is made from one ramp, as a miner makes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from miners.autotune import Point, choose
from scripts.launch import ROOT, scrubbed_environ
from tasks.settings import Settings

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
TIMEOUT_S = 240
# The same curves judged with a latency bound too: 32 tokens within 2 s is about twice
# the speed people read at, a bound an interactive chat could set.
BOUND_MS = 2000.0
VLLM_ENV = {
    "MIA_VLLM_KV_CACHE_BYTES": str(256 << 20),
    "MIA_VLLM_ENFORCE_EAGER": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
}


@dataclass(frozen=True)
class Case:
    engine: str
    python: str
    env: dict[str, str]
    what: str


def cases(quick: bool) -> list[Case]:
    """The engines to tune: echo always, llama.cpp and vLLM in the full mode."""
    ramp = {"MIA_AUTOTUNE_MAX_SLOTS": "8"}
    echo = Case(
        "echo",
        sys.executable,
        {**ramp, "MIA_ECHO_DELAY_MS": "100", "MIA_ECHO_BATCH": "4"},
        "100 ms per job, a device of 4 lanes",
    )
    if quick:
        return [echo]
    found = [echo, Case("llamacpp", sys.executable, ramp, "SmolLM2-135M, CPU")]
    if VLLM_PYTHON.exists():
        found.append(Case("vllm", str(VLLM_PYTHON), {**ramp, **VLLM_ENV}, "SmolLM2-135M, CPU"))
    return found


def tune_one(case: Case) -> dict[str, Any]:
    """Run the ramp in the engine's own environment; its report plus timings."""
    env = scrubbed_environ()
    env.update({"MIA_ENGINES": case.engine, "MIA_AUTOTUNE": "1", **case.env})
    started = time.perf_counter()
    out = subprocess.run(
        [case.python, "-m", "bench.autotune", "--one"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-5:]
        return {"engine": case.engine, "what": case.what, "error": " | ".join(tail)}
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    found.update(what=case.what, wall_s=round(time.perf_counter() - started, 2))
    found["settings"] = {k: v for k, v in case.env.items() if k.startswith("MIA_")}
    found["with_bound"] = with_bound(found["autotune"], BOUND_MS)
    return found


def with_bound(report: dict[str, Any], bound_ms: float) -> dict[str, Any]:
    """What the same ramp chooses with ``MIA_AUTOTUNE_MAX_LATENCY_MS=bound_ms``.

    Exact although the ramp stopped early: a bound only stops the walk sooner, so
    every step it needs was measured."""
    curve = [Point(**p) for p in report["curve"]]
    choice = choose(curve, Settings().autotune_min_gain, bound_ms)
    return {"max_latency_ms": bound_ms, "slots": choice.slots, "reason": choice.reason}


def run(quick: bool) -> dict[str, Any]:
    """Tune every engine this machine has (echo alone with ``quick``)."""
    settings = Settings()
    load_before = os.getloadavg()[0]
    found = [tune_one(case) for case in cases(quick)]
    return {
        "rule": {
            "min_gain": settings.autotune_min_gain,
            "max_latency_ms": settings.autotune_max_latency_ms,
            "tokens": settings.autotune_tokens,
            "rounds": settings.autotune_rounds,
        },
        "cpus": os.cpu_count(),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "engines": found,
    }


def markdown(result: dict[str, Any]) -> str:
    rule = result["rule"]
    lines = [
        "## Auto-tuned slots (`MIA_AUTOTUNE=1`)",
        "",
        f"Ramp 1, 2, 4, ... ({rule['rounds']} jobs per slot per step, {rule['tokens']} "
        "tokens each, greedy; a new engine first runs one warm-up job per slot, not "
        f"counted); the next step is taken while its tokens/s is at least "
        f"{rule['min_gain']:.0%} higher"
        + (f" and its p50 within {rule['max_latency_ms']:g} ms" if rule["max_latency_ms"] else "")
        + f". {result['cpus']} CPUs, load average {result['load_avg_1m'][0]:.1f} before "
        f"and {result['load_avg_1m'][1]:.1f} after.",
        "",
        "| engine | chosen slots | why | curve: concurrency → tok/s (p50 ms) | tuning s "
        f"| with a {BOUND_MS / 1000:g} s p50 bound |",
        "|---|---|---|---|---|---|",
    ]
    for found in result["engines"]:
        name = f"{found['engine']} ({found['what']})"
        if "error" in found:
            lines.append(f"| {name} | - | failed: {found['error'][:200]} | | | |")
            continue
        tuned, bound = found["autotune"], found["with_bound"]
        steps = ", ".join(
            f"{p['concurrency']} → {p['tok_s']:.0f} ({p['latency_p50_ms']:.0f})"
            for p in tuned["curve"]
        )
        lines.append(
            f"| {name} | **{tuned['slots']}** | {tuned['reason']}: {tuned['detail']} "
            f"| {steps} | {tuned['seconds']:.1f} (+{found['load_s']:.1f} load) "
            f"| {bound['slots']} ({bound['reason']}) |"
        )
    return "\n".join(lines)


def one() -> int:
    """In the engine's environment: tune from ``MIA_*`` and print one JSON line."""
    from miners.autotune import tune

    started = time.perf_counter()
    loaded, tuning = tune(Settings.from_env())
    total = time.perf_counter() - started
    loaded.engine.close()
    report = tuning.report()
    line = {"engine": loaded.engine.name, "load_s": round(total - tuning.seconds, 2)}
    print(json.dumps({**line, "autotune": report}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autotune", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="echo only, a shorter ramp")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return one()
    result = run(args.quick)
    print(markdown(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
