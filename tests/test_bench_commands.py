"""Every ``make`` command the README and docs/ show is one make accepts as written
(``make bench --quick`` is not: make refuses options it does not know; the form is
``make bench BENCH_ARGS=--quick``), the bench's report holds only its own lines (the
processes of its stack write to their log files, not to its output), and the quick
bench runs from end to end (about a minute: a section that hangs or breaks fails here,
not in the hands of someone measuring)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis as redis_lib

from bench.stack import start_stack
from scripts import redis_server
from scripts.launch import ROOT, free_port, scrubbed_environ
from scripts.processes import stop

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SPAN = re.compile(r"`([^`\n]+)`|^((?:[A-Z_]+=\S+ +)*make\b.*)$", re.M)
COMMAND = re.compile(r"^((?:[A-Z_]+=\S+ +)*)make((?: +[^ #]+)*)")


def shown_commands() -> set[str]:
    """The make command lines of the pages: code spans and code-block lines that are one
    (a log line such as ``make run: ...`` is not)."""
    found = set()
    for page in PAGES:
        for span, line in SPAN.findall(page.read_text()):
            command = COMMAND.match((span or line).strip())
            if command and not (command.group(2).split() or [""])[0].endswith(":"):
                found.add(command.group(0).strip())
    return found


def test_the_pages_show_make_commands():
    commands = shown_commands()
    assert {"make run", "make test", "make bench", "make bench BENCH_ARGS=--quick"} <= commands


@pytest.mark.parametrize("command", sorted(shown_commands()))
def test_make_accepts_each_command_the_pages_show(command: str):
    words = shlex.split(command.replace("…", "x"))
    env = scrubbed_environ()
    while "=" in words[0]:  # VAR=value make ...: the environment
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[0] == "make"
    done = subprocess.run(
        ["make", "-n", *words[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr  # -n: the recipes are printed, not run


def test_the_bench_stack_writes_nothing_on_the_bench_s_output(capfd, tmp_path: Path):
    with ExitStack() as stack:
        start_stack(stack, tmp_path)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert "Ready to accept connections" in (tmp_path / "redis.log").read_text()


def test_the_quick_bench_runs_every_section_and_writes_its_report(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=scrubbed_environ(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for section in ("summary", "throughput", "stock_stack", "hooks", "assistant", "engines"):
        assert results.get(section), section
    assert [row["engine"] for row in results["engines"]] == ["echo"]  # --quick: echo only
    assert results["targets"]
    assert (tmp_path / "out" / "report.md").read_text().startswith("#")
    assert (tmp_path / "out" / "latency.png").stat().st_size > 0


def test_the_reap_bench_times_both_kinds_of_pass(tmp_path: Path):
    """``python -m bench.reap`` (docs/performance.md) on a few miners: both sides timed,
    from the client and inside Redis, and its miners gone after. On a redis-server of
    its own: the bench flushes its database and reads its scripts' times back from the
    slow log, which the session's web tier on the shared database would crowd."""
    port = free_port()
    server = redis_server.start(port, tmp_path / "redis")
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.reap",
                "--miners",
                "20",
                "--passes",
                "3",
                "--redis",
                f"redis://127.0.0.1:{port}/0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=True,
        )
        found = json.loads(out.stdout.strip().splitlines()[-1])
        for side in ("silent_only", "full"):
            assert 0 < found[side]["client_ms_p50"] <= found[side]["client_ms_p99"]
        # the slow log counts whole microseconds: a silent-only pass over live miners
        # (two sorted-set commands) can take under one, and read 0
        assert found["silent_only"]["redis_ms_p50"] >= 0 < found["full"]["redis_ms_p50"]
        client = redis_lib.Redis(port=port)
        assert list(client.scan_iter("{mia}:hb:*")) == [] and not client.exists("{mia}:miners")
        client.close()
    finally:
        stop(server)


def test_the_engine_rows_offer_vllm_only_with_its_environment_and_its_model(
    monkeypatch, tmp_path: Path, capsys
):
    """A .venv-vllm without the converted model (``make test-vllm`` converts it) used
    to end the whole ``make bench`` at its engine rows; now the row is left out, and
    the bench says why."""
    from bench import engines

    python = tmp_path / ".venv-vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    model = tmp_path / "model"
    model.mkdir()
    monkeypatch.setattr(engines, "VLLM_PYTHON", python)
    monkeypatch.setenv("MIA_VLLM_MODEL", str(model))
    assert "vllm" not in engines.available()
    assert f"no vLLM row: no model at {model}" in capsys.readouterr().err
    (model / "config.json").write_text("{}")
    assert engines.available()["vllm"] == str(python)
