"""``python -m miners --gpu-id N``: the documented worker command line, typed for you."""

from __future__ import annotations

import argparse

from miners.celery import app
from tasks.keys import queue_for


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m miners", description=__doc__)
    parser.add_argument("--gpu-id", required=True, help="miner id; the queue is gpu-<id>")
    parser.add_argument("--loglevel", default="info")
    args = parser.parse_args(argv)
    queue = queue_for(args.gpu_id)
    app.worker_main(
        ["worker", "-Q", queue, "-n", f"{queue}@%h", "-l", args.loglevel, "--without-mingle"]
    )


if __name__ == "__main__":
    main()
