"""Drain benchmark: how fast one worker process empties a backlog, per delivery mode and batch.

``python -m loadtest.drain [--messages N]`` starts its own redis-server on a free loopback port,
and for each configuration starts ``python -m consumers worker`` (no-op handler, full decoding
and stats), waits until it is connected and idle, makes N envelopes appear in
``bus:{bench}:pending`` at once (one MULTI), and times until its stats hash counts N handled
(stats written every 20 ms, polled every 5 ms: the error is well under 1% at the default N).
Prints a table with each rate and its ratio to the unbatched at-least-once worker of the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import redis

from producer import Settings, envelope, keys, make_client

CONFIGS = (  # (delivery, batch size)
    ("at-least-once", 1),
    ("at-least-once", 100),
    ("at-most-once", 1),
    ("at-most-once", 100),
)
QUEUE = "bench"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def encoded(n: int) -> list[bytes]:
    """``n`` envelopes, encoded ahead of the clock."""
    return [envelope.new(i, src="bench", seq=i + 1, mode="prodcons").encode() for i in range(n)]


def drain(settings: Settings, delivery: str, batch: int, raws: list[bytes]) -> float:
    """Seconds from the moment the whole backlog appears (one MULTI) until one idle worker,
    already connected, has handled all of it."""
    client = make_client(settings, "admin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        {
            "BUS_REDIS_URL": settings.redis_url,
            "BUS_QUEUES": QUEUE,
            "BUS_BATCH_SIZE": str(batch),
            "BUS_STATS_INTERVAL_S": "0.02",
        }
    )
    name = f"bench-{delivery}-{batch}"
    cmd = [
        sys.executable,
        "-m",
        "consumers",
        "worker",
        "--queue",
        QUEUE,
        "--name",
        name,
        "--delivery",
        delivery,
        "--handler",
        "consumers.handlers:noop",
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(cmd, env=env)
    stats_key = keys.stats("worker", f"{QUEUE}:{name}")
    try:
        _wait(lambda: client.zscore(keys.consumers(QUEUE), name) is not None, "worker start")
        pipe = client.pipeline(transaction=True)  # the worker sees all of it at once
        for start in range(0, len(raws), 10_000):
            pipe.lpush(keys.pending(QUEUE), *raws[start : start + 10_000])
        started = time.perf_counter()
        pipe.execute()
        _wait(lambda: int(client.hget(stats_key, "handled") or 0) >= len(raws), "the drain")
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(10)
    client.flushall()
    return elapsed


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.drain", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000, help="backlog size (200,000)")
    args = parser.parse_args(argv)
    binary = shutil.which("redis-server")
    if not binary:
        print("redis-server is not installed (make bootstrap installs it)", file=sys.stderr)
        return 1
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", queues=(QUEUE,))
            _wait_ready(settings)
            raws = encoded(args.messages)
            results = [(d, b, len(raws) / drain(settings, d, b, raws)) for d, b in CONFIGS]
        finally:
            server.terminate()
            server.wait(10)
    base = results[0][2]
    print(f"\ndrain of {args.messages:,} messages by one worker process, no-op handler")
    print(f"{'delivery':<15}{'batch':>7}{'msg/s':>12}{'vs first row':>14}")
    for delivery, batch, rate in results:
        print(f"{delivery:<15}{batch:>7}{rate:>12,.0f}{rate / base:>13.1f}x")
    return 0


def _wait_ready(settings: Settings) -> None:
    client = make_client(settings, "admin")

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    _wait(answers, "redis-server", timeout_s=10)


if __name__ == "__main__":
    sys.exit(main())
