"""The memory section: a worker's and a subscriber's RSS over a long run.

A worker (at-least-once, batches of 100, no-op handler) drains N envelopes LPUSHed in chunks
ahead of and during the drain (the backlog kept between one and two chunks); a subscriber
(no-op handler) takes a flood PUBLISHed in chunks as fast as it keeps up (at most a few chunks
ahead of its own ``received``, so Redis's output buffer stays small), N messages or what fits
in the time limit. A thread samples the consumer's RSS every 0.5 s with its count of messages;
the rows are the RSS once 10% of the run is done (the warm-up: imports, pools and buffers at
their working size), the largest, the last, and the growth from warm-up to the end.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from loadtest.bench import flood, publisher
from loadtest.bench.common import POLL_S, PYTHON, Result, Scale, clean_env, rss_kib, spawn
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer.store import envelope, keys

SECTION = "memory"
QUEUE = "memory"
CHUNK = 20_000
SAMPLE_EVERY_S = 0.5
WARM_UP = 0.10  # of the run
TARGET_GROWTH = "within 10%"


@dataclass
class Samples:
    """(seconds since the start, RSS KiB, messages done) every :data:`SAMPLE_EVERY_S`."""

    points: list[tuple[float, int, int]] = field(default_factory=list)

    def rows(self, who: str) -> list[Result]:
        """The section's four rows for ``who`` (RSS in MiB, growth in %)."""
        if not self.points:
            raise RuntimeError(f"{who}: no RSS sample")
        end = self.points[-1]
        n = end[2]  # what it did in all
        warm = next(p for p in self.points if p[2] >= WARM_UP * n)
        top = max(self.points, key=lambda p: p[1])
        growth = 100 * (end[1] - warm[1]) / warm[1]
        extra = {"messages": n, "samples": len(self.points), "seconds": end[0],
                 "warm_up_at_s": warm[0], "max_at_s": top[0]}  # fmt: skip
        warm_name = f"{who} RSS after warm-up ({WARM_UP:.0%})"
        return [
            Result(SECTION, warm_name, warm[1] / 1024, "MiB", extra=extra),
            Result(SECTION, f"{who} RSS max", top[1] / 1024, "MiB", ref=warm_name,
                   higher_is_better=False, extra=extra),
            Result(SECTION, f"{who} RSS at the end", end[1] / 1024, "MiB", ref=warm_name,
                   higher_is_better=False, extra=extra),
            Result(SECTION, f"{who} RSS growth", growth, "%", higher_is_better=False,
                   target=TARGET_GROWTH, extra=extra),
        ]  # fmt: skip


class Sampler(threading.Thread):
    """Samples ``pid``'s RSS and ``done()`` every 0.5 s until stopped."""

    def __init__(self, pid: int, done: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.done = done
        self.samples = Samples()
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        while True:
            self.samples.points.append((time.monotonic() - started, rss_kib(self.pid), self.done()))
            if self.stopping.wait(SAMPLE_EVERY_S):
                return

    def finish(self) -> Samples:
        """One last sample, then stop."""
        self.stopping.set()
        self.join()
        self.samples.points.append(
            (self.samples.points[-1][0], rss_kib(self.pid), self.done())
        )  # fmt: skip
        return self.samples


def counter(client: redis.Redis, stats_key: str, field_name: str) -> Callable[[], int]:
    return lambda: int(client.hget(stats_key, field_name) or 0)


def worker_run(url: str, client: redis.Redis, n: int) -> Samples:
    """A worker draining ``n`` messages pushed a chunk at a time; its RSS samples."""
    name, src = "memory", f"bench-{os.getpid()}"
    pending = keys.pending(QUEUE)
    pushed = _push(client, pending, src, 0, min(2 * CHUNK, n))
    env = clean_env(BUS_REDIS_URL=url, BUS_BATCH_SIZE="100", BUS_STATS_INTERVAL_S="0.1")
    child = spawn([PYTHON, "-m", "consumers", "worker", "--queue", QUEUE, "--name", name,
                   "--delivery", "at-least-once", "--handler", "consumers.handlers:noop",
                   "--log-level", "WARNING"], env=env)  # fmt: skip
    try:
        handled = counter(client, keys.stats("worker", f"{QUEUE}:{name}"), "handled")
        wait_for(lambda: _alive(child) and handled() > 0, 60, "the worker to start", POLL_S)
        sampler = Sampler(child.pid, handled)
        while pushed < n:
            if client.llen(pending) < CHUNK:
                pushed = _push(client, pending, src, pushed, min(pushed + CHUNK, n))
            else:
                time.sleep(0.02)
            _alive(child)
        wait_for(lambda: _alive(child) and handled() >= n, 900, f"{n} messages handled", 0.05)
        return sampler.finish()
    finally:
        stop(child)


def _push(client: redis.Redis, key: str, src: str, start: int, end: int) -> int:
    """LPUSH envelopes ``start`` to ``end`` (seq from 1); return ``end``."""
    pipe = client.pipeline(transaction=False)
    for first in range(start, end, 1000):
        bodies = [envelope.new(i, src=src, seq=i + 1, mode="prodcons").encode()
                  for i in range(first, min(first + 1000, end))]  # fmt: skip
        pipe.lpush(key, *bodies)
    pipe.execute()
    return end


def _alive(child: subprocess.Popen[bytes]) -> bool:
    if child.poll() is not None:
        raise RuntimeError(f"the consumer exited with {child.returncode}")
    return True


def subscriber_run(server: RedisServer, n: int, limit_s: float) -> Samples:
    """A subscriber under a flood of ``n`` messages (or what ``limit_s`` allows), published
    at most two chunks ahead of what it received; its RSS samples."""
    name, src = "memory", f"bench-{os.getpid()}"
    client = server.plain_client()
    channel_key = keys.channel(flood.CHANNEL)
    child = spawn(flood.subscriber_args(name, flood.CHANNEL), env=flood.subscriber_env(server.url))
    try:
        received = counter(client, keys.stats("subscriber", name), "received")
        wait_for(
            lambda: _alive(child) and publisher.numsub(client, channel_key) == 1,
            60,
            "the subscriber to subscribe",
            POLL_S,
        )
        sampler = Sampler(child.pid, received)
        published, ends_at = 0, time.monotonic() + limit_s
        while published < n and time.monotonic() < ends_at:
            if published - received() < 2 * CHUNK:
                count = min(CHUNK, n - published)
                bodies = publisher.envelopes(count, src, first_seq=published + 1)
                published += publisher.publish(
                    server.port, publisher.packed(channel_key, bodies)
                ).count
            else:
                time.sleep(0.02)
            _alive(child)
        wait_for(
            lambda: _alive(child) and received() >= published, 300, f"{published} received", 0.05
        )
        return sampler.finish()
    finally:
        stop(child)


def run(scale: Scale) -> list[Result]:
    """The worker's four rows, then the subscriber's."""
    n = scale.n(1_000_000, 20_000)
    with throwaway_server(*flood.NO_CUTOFF) as server:
        worker = worker_run(server.url, server.plain_client(), n)
        subscriber = subscriber_run(server, n, scale.s(30.0, 10.0))
    return worker.rows("worker") + subscriber.rows("subscriber")
