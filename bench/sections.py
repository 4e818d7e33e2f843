"""The sections of ``make bench`` that start processes of their own beside the bench's
stack: legacy polling miners, one miner per engine, a Mosquitto and the MQTT gateway,
and the throughput miners. ``bench.__main__`` runs them in order."""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from bench import assistant, engines, hooks, measure, prompts, serving, throughput
from bench import mqtt as bench_mqtt
from bench.report import Row
from bench.stack import environment, live_miners
from scripts.launch import free_port, gateway_argv, legacy_argv, logged, miner_argv, running
from scripts.processes import wait_for
from tasks.settings import Settings
from web.fleet.client import JobClient
from web.mqtt.broker import broker_answers


def legacy_rows(
    settings: Settings, jobs: JobClient, work: Path, samples: int, long_samples: int, quick: bool
) -> tuple[list[Row], list[float]]:
    """(e) and (f): a real legacy miner, polling every 2 s then long-polling, with no
    push miner alive; and, while the polling one runs, the assistant's conversation
    with only it to answer (not with ``quick``): the rows, and the conversation's turn
    times."""
    rows, conversation = [], []
    env = environment(settings)
    for key, label, wait_s, spread_s, n in (
        ("polling", "(e) legacy miner polling /get_work every 2 s", 0.0, 2.0, samples),
        # 2 s polls: a long-polling miner stops only when its open poll ends (so that no
        # job is leased to a miner that has left), and a poll that ends empty is opened
        # again at once, so the pickup latency is the same.
        ("longpoll", "(f) legacy miner long-polling /get_work", 2.0, 0.05, long_samples),
    ):
        log = work / f"{key}.log"
        with running(legacy_argv(f"bench-{key}", poll_s=2.0, wait_s=wait_s), env, log):
            wait_for(partial(logged, log, "polling"), 30, f"the {key} miner")
            if key == "polling" and not quick:
                conversation = assistant.conversation("127.0.0.1", settings.port)
            rows.append(Row(key, label, measure.legacy_pickup(jobs, n, spread_s)))
    return rows, conversation


def engine_rows(
    settings: Settings,
    work: Path,
    quick: bool,
    only: dict[str, str] | None = None,
    samples: int = 0,
) -> list[engines.EngineRow]:
    """The engine section: one engine at a time, each alone on the machine (``only``:
    these engines, each from the Python given; ``scripts.gpu_check``)."""
    rows = []
    for name, python in (only or engines.available()).items():
        if quick and only is None and name != "echo":
            continue
        n = samples or (5 if quick else 20)
        rows.append(engine_row(settings, work, name, python, n, quick))
    return rows


def engine_row(
    settings: Settings, work: Path, name: str, python: str, samples: int, quick: bool
) -> engines.EngineRow:
    """One engine's row. Its first-token samples are cold and the same on both sides
    (``bench.prompts``). Off the GPU, the in-process engine is kept up beside the miner
    and their samples alternate one by one; on the GPU (where two engines would not
    fit) the in-process ones come first, alone."""
    row = engines.EngineRow(name)
    (measured,) = prompts.measured_prompts(samples, 1)
    direct = None
    if engines.on_gpu():
        row.load_s, row.direct_ttft_ms = engines.direct_ttft(name, python, measured)
    else:
        direct = engines.DirectServer(name, python)
    argv = miner_argv(f"bench-{name}", python, alone=True)
    env = {**environment(settings), **engines.miner_env(name)}
    try:
        with running(argv, env, work / f"{name}.log"):
            wait_for(lambda: live_miners(settings.api_url) > 0, 300, f"the {name} miner")
            host, port, tokens = "127.0.0.1", settings.port, 32 if quick else 64
            engines.throughput(host, port, 2, 2, 8)  # warm up
            row.sequential_tok_s = engines.throughput(host, port, 4, 1, tokens)
            row.concurrent_tok_s = engines.throughput(host, port, 8, 8, tokens)
            engines.sse_ttft(host, port, prompts.warmup_prompts())  # uncounted
            for message in measured:
                if direct is not None:
                    row.direct_ttft_ms.append(direct.sample(message))
                row.push_ttft_ms += engines.sse_ttft(host, port, [message])
    finally:
        if direct is not None:
            row.load_s = direct.close()
    wait_for(lambda: live_miners(settings.api_url) == 0, 10, f"the {name} miner to leave")
    return row


def mqtt_hop(
    settings: Settings, work: Path, samples: int
) -> tuple[list[float], list[float]] | None:
    """The same assistant turn over MQTT and over HTTP, interleaved (None: no broker).

    A Mosquitto of the bench's own (``set_tcp_nodelay true``) when the binary is there,
    else the one at MIA_MQTT_URL.
    """
    with ExitStack() as stack:
        url = os.environ.get("MIA_MQTT_URL", "mqtt://127.0.0.1:1883")
        mosquitto = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if mosquitto:
            port = free_port()
            conf = work / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                "set_tcp_nodelay true\npersistence false\n"
            )
            stack.enter_context(running([mosquitto, "-c", str(conf)], {}, work / "mq.log"))
            url = f"mqtt://127.0.0.1:{port}"
            wait_for(lambda: broker_answers(url), 10, "mosquitto")
        if not broker_answers(url):
            return None
        env = {**environment(settings), "MIA_MQTT_URL": url, "MIA_MQTT_CLIENT_ID": "mia-bench-gw"}
        env["MIA_MQTT_HEALTH_PORT"] = str(free_port())  # beside a make run's gateway on 8081
        env["MIA_MQTT_RATE_LIMIT"] = "0"  # one client sends every sample
        log = work / "mqtt.log"
        stack.enter_context(running(gateway_argv(), env, log))
        wait_for(partial(logged, log, "subscribed to"), 30, "the MQTT gateway")
        bench_mqtt.over_mqtt(url, 5)  # warm up
        over_mqtt, over_http = [], []
        for _ in range(5):
            over_mqtt += bench_mqtt.over_mqtt(url, samples // 5)
            over_http += bench_mqtt.over_http("127.0.0.1", settings.port, samples // 5)
        return over_mqtt, over_http


def throughput_section(
    settings: Settings, work: Path, quick: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(3) 64 clients on ``/chat/direct`` with two 8-slot echo miners beside the bench's
    own; in the full run, each serving stack of ``bench.serving``."""
    with throughput.miners(settings, work):
        seconds, warmup_s = (3.0, 1.0) if quick else (15.0, 3.0)
        main = throughput.load(settings.port, throughput.CLIENTS, seconds, warmup_s)
        stacks = [] if quick else serving.serving(settings, work, 5.0, 1.0)
    return main, stacks


def hooks_section(settings: Settings, work: Path, quick: bool) -> dict[str, Any]:
    """Each per-request hook on and off (``bench.hooks``), and the lines the bench's web
    tier logs per ``/chat/direct``."""
    found = hooks.run(5000 if quick else 20000)
    send = partial(measure.chat_round_trip, "127.0.0.1", settings.port)
    lines = hooks.lines_per_request(work / "web.log", 100 if quick else 500, send)
    found["web_log_lines_per_request"] = lines
    return found
