"""A closed-loop HTTP load generator: many keep-alive clients, one process, asyncio.

    python -m bench.load --port 8000 --clients 64 --seconds 10 --warmup-s 2

Each client holds one keep-alive connection and sends the next request as soon as
the previous answer is read (a closed loop, as ``wrk`` does), so throughput is what
the server sustains at that concurrency. Requests in the first ``--warmup-s`` are
sent but not counted. Prints one JSON line: requests/s, latency percentiles, status
counts. It runs as its own process so that its CPU is not the server's.

It speaks just enough HTTP/1.1 for this (Content-Length bodies, no chunking): the
bench's own requests against its own server, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.report import percentile

CHAT_BODY = b'{"message":"Hello","max_tokens":8}'


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0  # answered requests, warm-up included


def chat_request(
    host: str, port: int, body: bytes = CHAT_BODY, path: str = "/chat/direct"
) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def client(
    host: str, port: int, request: bytes, counting_from: float, until: float, tally: Tally
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            try:
                status, keep = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                tally.errors[type(exc).__name__] += 1
                keep = False
            else:
                tally.sent += 1
                if started >= counting_from:
                    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                    tally.statuses[status] += 1
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def run(
    host: str, port: int, clients: int, seconds: float, warmup_s: float, path: str
) -> dict[str, object]:
    tally = Tally()
    request = chat_request(host, port, path=path)
    began = time.perf_counter()
    counting_from, until = began + warmup_s, began + warmup_s + seconds
    await asyncio.gather(
        *(client(host, port, request, counting_from, until, tally) for _ in range(clients))
    )
    measured_s = time.perf_counter() - counting_from
    ok = tally.statuses.get(200, 0)
    lat = tally.latencies_ms
    return {
        "clients": clients,
        "seconds": round(measured_s, 2),
        "warmup_s": warmup_s,
        "sent": tally.sent,
        "requests": len(lat),
        "ok": ok,
        "req_per_s": round(len(lat) / measured_s, 1),
        "errors": sum(tally.errors.values()) + len(lat) - ok,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "transport_errors": dict(tally.errors),
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat, default=float("nan")), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--path", default="/chat/direct", help="what each request POSTs to")
    args = parser.parse_args(argv)
    found = asyncio.run(
        run(args.host, args.port, args.clients, args.seconds, args.warmup_s, args.path)
    )
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
