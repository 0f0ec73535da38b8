"""Push (or publish) to handler start, at steady rates, for each consumer: the worker in both
delivery modes, the subscriber, and the naive loops as references.

A sender in this process paces messages at a fixed rate (each millisecond it sends what is due,
stamped with ``time.time_ns()`` just before the send, in one LPUSH or one pipeline of PUBLISHes)
to one consumer process at a time, whose handler (:mod:`loadtest.bench.stamp`) notes each
latency in microseconds. Reported: p50 and p99 per consumer and rate; the worker's rows are
compared to the naive loop of the same guarantee at the same rate.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import redis

from loadtest.bench.common import POLL_S, PYTHON, Result, Scale, clean_env, spawn
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer.store import envelope, keys

SECTION = "latency"
QUEUE = "bench"
RATES = (1_000, 5_000)
TARGET_MS = {1_000: 1.0, 5_000: 2.0}
HANDLER = "loadtest.bench.stamp:stamp"
# label: (command after `python -m`, sends by: "push" | "publish", the row it is compared to)
CONSUMERS = {
    "naive BLMOVE + LREM loop": (["loadtest.bench.naiveloop", "blmove"], "push", None),
    "redis-bus at-least-once": (["consumers", "worker", "--delivery", "at-least-once"], "push",
                                "naive BLMOVE + LREM loop"),
    "naive BRPOP loop": (["loadtest.bench.naiveloop", "brpop"], "push", None),
    "redis-bus at-most-once": (["consumers", "worker", "--delivery", "at-most-once"], "push",
                               "naive BRPOP loop"),
    "redis-bus subscriber": (["consumers", "subscriber"], "publish", None),
}  # fmt: skip


def _command(server: RedisServer, args: list[str]) -> list[str]:
    if args[0] == "loadtest.bench.naiveloop":
        return [PYTHON, "-m", *args, server.url, keys.pending(QUEUE)]
    daemon = ["--name", "bench-latency", "--handler", HANDLER, "--log-level", "WARNING"]
    where = ["--queue", QUEUE] if args[1] == "worker" else ["--channel", QUEUE]
    return [PYTHON, "-m", *args, *where, *daemon]


def _ready(client: redis.Redis, args: list[str]) -> bool:
    if args[0] == "consumers" and args[1] == "subscriber":
        return bool(
            dict(client.pubsub_numsub(keys.channel(QUEUE))).get(keys.channel(QUEUE).encode())
        )
    return any(c.get("cmd") in ("brpop", "blmove") for c in client.client_list())


def send(client: redis.Redis, how: str, rate: int, seconds: float) -> int:
    """Send ``rate`` messages a second for ``seconds``; returns how many."""
    n = int(rate * seconds)
    key = keys.pending(QUEUE) if how == "push" else keys.channel(QUEUE)
    mode = "prodcons" if how == "push" else "pubsub"
    started, sent = time.perf_counter(), 0
    while sent < n:
        due = min(n, int((time.perf_counter() - started) * rate) + 1)
        if due == sent:
            time.sleep(0.0002)
            continue
        t = time.time_ns()
        raws = [envelope.new({"t": t}, src="bench-latency", seq=i + 1, mode=mode).encode()
                for i in range(sent, due)]  # fmt: skip
        if how == "push":
            client.lpush(key, *raws)
        else:
            pipe = client.pipeline(transaction=False)
            for raw in raws:
                pipe.publish(key, raw)
            pipe.execute()
        sent = due
    return n


def measure(server: RedisServer, args: list[str], how: str, rate: int, seconds: float,
            workdir: Path) -> list[int]:  # fmt: skip
    """Latencies (µs) of one consumer process at one rate."""
    client = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    path = workdir / f"lat-{os.getpid()}-{time.monotonic_ns()}.txt"
    n = int(rate * seconds)
    env = clean_env(BUS_REDIS_URL=server.url, BUS_QUEUES=QUEUE, BUS_CHANNELS=QUEUE,
                    BENCH_EXPECT=str(n), BENCH_LATENCY_FILE=str(path),
                    PYTHONPATH=str(Path(__file__).resolve().parents[2]))  # fmt: skip
    proc = spawn(_command(server, args), env)
    try:
        wait_for(lambda: _ready(client, args), 30, "the consumer to listen", POLL_S)
        time.sleep(0.2)
        send(client, how, rate, seconds)
        wait_for(path.exists, 30 + seconds, "every message handled", 0.05)
        values = [int(x) for x in path.read_text().split()]
    finally:
        stop(proc)
        client.flushall()
        client.close()
    return values


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def run(scale: Scale) -> list[Result]:
    seconds = scale.s(5.0, 0.4)
    rows = []
    with throwaway_server() as server, tempfile.TemporaryDirectory() as tmp:
        for rate in RATES:
            for label, (args, how, ref) in CONSUMERS.items():
                values = measure(server, args, how, rate, seconds, Path(tmp))
                p99 = percentile(values, 0.99) / 1000
                extra = {"rate": rate, "messages": len(values),
                         "p50_ms": percentile(values, 0.50) / 1000,
                         "mean_ms": statistics.fmean(values) / 1000,
                         "max_ms": max(values) / 1000}  # fmt: skip
                target = f"<= {TARGET_MS[rate]:g} ms" if label.startswith("redis-bus") else ""
                rows.append(Result(SECTION, f"{label} at {rate:,}/s, p99", p99, "ms",
                                   ref=f"{ref} at {rate:,}/s, p99" if ref else None,
                                   higher_is_better=False, target=target, extra=extra))  # fmt: skip
    return rows
