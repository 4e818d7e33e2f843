"""A fleet of simulated miners: registered over HTTP, heartbeating at 1 Hz each.

    python -m bench.simulate --api http://127.0.0.1:5000 --token T --count 1000

One asyncio process. It registers ``--count`` ids (``sim-0000``...) with ``POST
/register`` (a few at a time), prints ``ready`` and then obeys one command per line
on stdin, answering each with one JSON line on stdout:

- ``beat``: start (or resume) heartbeats, each miner once a second, the fleet's beats
  spread evenly over the second, over ``--connections`` keep-alive connections;
- ``offline``: the same beats, but saying ``offline``: as much work for the web tier,
  and none of the miners is live (the bench's baseline under the same load);
- ``pause``: stop sending (the heartbeats expire after the TTL);
- ``stats``: beats sent, answered 200, failed, how long beating ran and the latency
  (send -> answer, ms) of each answered beat since the last ``stats``;
- ``quit``.

The miners have no Celery queue: they say they are busy, and the bench sets their
in-flight counters to their slots, so dispatch considers every one and none can win.
Plain HTTP/1.1 over asyncio streams keeps the client cheap (one request is a
prepared byte string), so the web tier, not the simulator, is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

SLOTS = 4
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Window:
    """What happened to the beats since the last ``stats``."""

    sent: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    beating_s: float = 0.0
    since: float = 0.0  # when beating (re)started, 0 while paused

    def report(self) -> dict[str, Any]:
        active = self.beating_s + (time.perf_counter() - self.since if self.since else 0.0)
        return {
            "sent": self.sent,
            "ok": len(self.latencies_ms),
            "failed": self.failed,
            "beating_s": round(active, 3),
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
        }


class Connection:
    """One keep-alive HTTP/1.1 connection; ``call`` sends prepared bytes, returns status."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def call(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        try:
            self._writer.write(request)
            head = await self._reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await self._reader.readexactly(length)
            return int(head.split(b" ", 2)[1]), body
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self._writer.close()
            self._writer = self._reader = None
            raise


def request(host: str, method: str, path: str, body: dict[str, Any], token: str) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def heartbeat(miner_id: str, models: list[str], status: str = "busy") -> dict[str, Any]:
    """A busy miner's heartbeat, the size of a real one."""
    return {
        "miner_id": miner_id,
        "status": status,
        "slots": SLOTS,
        "free_slots": 0,
        "models": models,
        "engine": "sim",
        "memory": {"total_mb": 81920.0, "used_mb": 40960.0, "free_mb": 40960.0},
        "engine_stats": {"tokens_per_s": 1500.0},
        "boot": "sim",
    }


class Fleet:
    def __init__(self, api: str, token: str, count: int, models: list[str], conns: int) -> None:
        url = urlsplit(api)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.token, self.models, self.conns = token, models, conns
        self.ids = [f"sim-{i:04d}" for i in range(count)]
        self.beats: list[bytes] = []
        self.live_beats: list[bytes] = []
        self.offline_beats: list[bytes] = []
        self.window = Window()
        self.beating = asyncio.Event()

    async def register(self, parallel: int = 8) -> None:
        todo: asyncio.Queue[str] = asyncio.Queue()
        for miner_id in self.ids:
            todo.put_nowait(miner_id)
        keys: dict[str, str] = {}

        async def worker() -> None:
            conn = Connection(self.host, self.port)
            while not todo.empty():
                miner_id = todo.get_nowait()
                body = {"miner_id": miner_id, "kind": "push"}
                status, answer = await conn.call(
                    request(self.host, "POST", "/register", body, self.token)
                )
                if status != 200:
                    raise RuntimeError(f"/register {miner_id} answered {status}: {answer!r}")
                keys[miner_id] = json.loads(answer)["key"]

        await asyncio.gather(*(worker() for _ in range(parallel)))
        for status, beats in (("busy", self.live_beats), ("offline", self.offline_beats)):
            beats.extend(
                request(self.host, "POST", "/heartbeat", heartbeat(i, self.models, status), keys[i])
                for i in self.ids
            )
        self.beats = self.live_beats

    async def run(self) -> None:
        """Beat each miner once a second, spread evenly, whenever ``beating`` is set."""
        due: asyncio.Queue[tuple[float, int]] = asyncio.Queue(maxsize=self.conns * 4)
        senders = [asyncio.create_task(self._send(due)) for _ in range(self.conns)]
        step = 1.0 / len(self.ids)
        i, start = 0, time.perf_counter()
        while True:
            if not self.beating.is_set():
                await self.beating.wait()
                i, start = 0, time.perf_counter()
            at = start + i * step
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule, not a wait for a result
            await due.put((at, i % len(self.ids)))
            i += 1
        for task in senders:  # pragma: no cover - run() is cancelled, never returns
            task.cancel()

    async def _send(self, due: asyncio.Queue[tuple[float, int]]) -> None:
        conn = Connection(self.host, self.port)
        while True:
            _, index = await due.get()
            started = time.perf_counter()
            self.window.sent += 1
            try:
                status, _ = await conn.call(self.beats[index])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                status = 0
            if status == 200:
                self.window.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                self.window.failed += 1

    def command(self, line: str) -> dict[str, Any]:
        now = time.perf_counter()
        if line in ("beat", "offline"):
            self.beats = self.live_beats if line == "beat" else self.offline_beats
        if line in ("beat", "offline") and not self.beating.is_set():
            self.window.since = now
            self.beating.set()
        elif line == "pause" and self.beating.is_set():
            self.beating.clear()
            self.window.beating_s += now - self.window.since
            self.window.since = 0.0
        elif line == "stats":
            report = self.window.report()
            self.window = Window(since=now if self.beating.is_set() else 0.0)
            return report
        return {"ok": True, "beating": self.beating.is_set()}


async def main_async(args: argparse.Namespace) -> None:
    fleet = Fleet(args.api, args.token, args.count, json.loads(args.models), args.connections)
    await fleet.register()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    beats = asyncio.create_task(fleet.run())
    print(json.dumps({"ready": True, "ids": fleet.ids}), flush=True)
    while line := (await stdin.readline()).decode().strip():
        if line == "quit":
            break
        print(json.dumps(fleet.command(line)), flush=True)
    beats.cancel()


class Simulator:
    """The driver's side (``bench.scale``): this module run as its own process, driven
    one command at a time over its stdin."""

    def __init__(self, api: str, token: str, count: int, models: list[str], log: Path) -> None:
        argv = [sys.executable, "-m", "bench.simulate", "--api", api, "--token", token]
        argv += ["--count", str(count), "--models", json.dumps(models)]
        with log.open("ab") as err:
            self._proc = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        self.ids: list[str] = self._answer()["ids"]

    def _answer(self) -> dict[str, Any]:
        out: IO[bytes] | None = self._proc.stdout
        line = out.readline() if out is not None else b""
        if not line:
            raise RuntimeError("the simulator stopped (see its log)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def __call__(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{command}\n".encode())
        self._proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        try:
            self("quit")
        except (OSError, RuntimeError, ValueError):
            pass
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@contextmanager
def simulator(
    api: str, token: str, count: int, models: list[str], log: Path
) -> Iterator[Simulator]:
    sim = Simulator(api, token, count, models, log)
    try:
        yield sim
    finally:
        sim.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--token", required=True, help="the registration token")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--models", default='["echo"]', help="JSON list the miners serve")
    parser.add_argument("--connections", type=int, default=16)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
