"""Drain benchmark: how fast one worker process empties a backlog, per delivery mode and batch size.

``python -m loadtest.drain [--messages N]`` starts its own redis-server on a free loopback port,
and for each configuration fills ``bus:{bench}:pending`` with N envelopes, starts
``python -m consumers worker`` (no-op handler, full decoding and stats), and times the drain
from the worker's first handled message to its last, read from its stats hash. Prints a table
with each rate and its ratio to the unbatched at-least-once worker measured in the same run.
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

import redis

from producer import Producer, Settings, keys, make_client

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


def fill(settings: Settings, n: int) -> None:
    """Push ``n`` envelopes in chunks of 1,000 (one LPUSH each)."""
    producer = Producer(make_client(settings, "producer"))
    for start in range(0, n, 1000):
        producer.push_many(range(start, min(n, start + 1000)), QUEUE)


def drain(settings: Settings, delivery: str, batch: int, n: int) -> float:
    """Seconds one worker takes from its first to its last handled message."""
    client = make_client(settings, "admin")
    fill(settings, n)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        {
            "BUS_REDIS_URL": settings.redis_url,
            "BUS_QUEUES": QUEUE,
            "BUS_BATCH_SIZE": str(batch),
            "BUS_STATS_INTERVAL_S": "0.05",
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
    first = last = 0.0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            handled = int(client.hget(stats_key, "handled") or 0)
            now = time.perf_counter()
            if handled and not first:
                first = now
            if handled >= n:
                last = now
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"{name}: drain did not finish")
    finally:
        proc.terminate()
        proc.wait(10)
    client.flushall()
    return last - first


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
            results = [
                (d, b, args.messages / drain(settings, d, b, args.messages)) for d, b in CONFIGS
            ]
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
    for _ in range(100):
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


if __name__ == "__main__":
    sys.exit(main())
