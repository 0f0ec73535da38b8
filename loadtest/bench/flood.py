"""The subscriber section: one subscriber under a PUBLISH flood, beside a raw redis-py loop.

A private redis-server with ``client-output-buffer-limit pubsub 0 0 0`` (Redis never cuts a
slow subscriber off: what it cannot take yet waits in its output buffer) receives N real
envelopes (``src``/``seq``, encoded and packed as RESP before the clock starts) PUBLISHed
through a raw socket, a chunk in flight while the previous chunk's replies are read, so the
publisher is never the bottleneck. The same flood goes first to a bare ``get_message`` loop
(no decoding: the most redis-py can deliver), then to ``python -m consumers subscriber`` with
the no-op handler; its rate and loss come from its own stats hash, snapshot to snapshot.

``python -m loadtest.bench.flood raw PORT CHANNEL N`` is that bare loop, run as a child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import redis

from loadtest.bench.common import POLL_S, PYTHON, ROOT, Result, Scale, clean_env, spawn
from loadtest.bench.publisher import Published, envelopes, numsub, packed, publish
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer.store import envelope, keys

SECTION = "subscriber"
CHANNEL = "flood"
NO_CUTOFF = ("--client-output-buffer-limit", "pubsub 0 0 0")
RAW = "raw redis-py get_message loop"
RECEIVED = "subscriber received"
RAW_CPU = "raw loop CPU per message"
TARGET_RATE = "≥ 150,000 msg/s, none lost"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscriber_args(name: str, channel: str) -> list[str]:
    return [PYTHON, "-m", "consumers", "subscriber", "--name", name, "--channel", channel,
            "--handler", "consumers.handlers:noop", "--log-level", "WARNING"]  # fmt: skip


def subscriber_env(url: str) -> dict[str, str]:
    return clean_env(BUS_REDIS_URL=url, BUS_STATS_INTERVAL_S="0.05")


def stats_of(client: redis.Redis, name: str) -> dict[str, int]:
    """The subscriber's counters and ``updated_ms`` (0 for what is not there yet)."""
    fields = ("received", "lost", "duplicates", "out_of_order", "updated_ms", "reconnects")
    values = client.hmget(keys.stats("subscriber", name), fields)
    return {f: int(v or 0) for f, v in zip(fields, values, strict=True)}


def watch_received(client: redis.Redis, name: str, n: int, started_ms: int,
                   idle_s: float = 5.0) -> dict[str, float]:  # fmt: skip
    """Poll the stats hash until ``n`` messages are received (or nothing moves for
    ``idle_s``); rate from the first snapshot with any message to the first with all. A flood
    short enough to fit in one stats interval (a smoke run) has no such span: its rate is then
    counted from ``started_ms``, when publishing began (a lower bound)."""
    first: dict[str, int] | None = None
    last = stats_of(client, name)
    moved_at = time.monotonic()
    while last["received"] < n and time.monotonic() - moved_at < idle_s:
        time.sleep(0.01)
        now = stats_of(client, name)
        if now["received"] != last["received"]:
            moved_at = time.monotonic()
        if first is None and now["received"] > 0:
            first = now
        last = now
    if first is None or last["updated_ms"] <= first["updated_ms"]:
        span_s = (last["updated_ms"] - started_ms) / 1000
        rate = last["received"] / span_s if span_s > 0 else 0.0
        return {**last, "rate": rate, "span_s": span_s}
    span_s = (last["updated_ms"] - first["updated_ms"]) / 1000
    return {**last, "rate": (last["received"] - first["received"]) / span_s, "span_s": span_s}


def run_raw(server: RedisServer, chunks: list[tuple[int, bytes]], n: int) -> dict[str, float]:
    """The bare loop (a child process) under one flood: its figures and the publisher's."""
    channel_key = keys.channel(CHANNEL)
    child = subprocess.Popen(
        [PYTHON, "-m", "loadtest.bench.flood", "raw", str(server.port), channel_key, str(n)],
        env=clean_env(), cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        admin = server.plain_client()
        wait_for(lambda: numsub(admin, channel_key) == 1, 30, "the raw loop to subscribe", POLL_S)
        pub = publish(server.port, chunks)
        out, _ = child.communicate(timeout=600)
    finally:
        stop(child)
    figures: dict[str, float] = json.loads(out)
    return {**figures, "publish_rate": pub.count / pub.elapsed_s, "zero": pub.zero}


def run_subscriber(server: RedisServer, chunks: list[tuple[int, bytes]], n: int,
                   name: str = "flood") -> dict[str, float]:  # fmt: skip
    """``python -m consumers subscriber`` under one flood: its figures and the publisher's."""
    channel_key = keys.channel(CHANNEL)
    admin = server.plain_client()
    child = spawn(subscriber_args(name, CHANNEL), env=subscriber_env(server.url))
    try:
        wait_for(lambda: numsub(admin, channel_key) == 1, 30, "the subscriber to subscribe", POLL_S)
        wait_for(lambda: admin.exists(keys.stats("subscriber", name)) == 1, 30, "its stats", POLL_S)
        cpu_before = cpu_s(child.pid)
        started_ms = envelope.now_ms()
        publisher = _Background(lambda: publish(server.port, chunks))
        got = watch_received(admin, name, n, started_ms)
        cpu = cpu_s(child.pid) - cpu_before
        pub = publisher.result()
    finally:
        stop(child)
    return {**got, "cpu_s": cpu, "publish_rate": pub.count / pub.elapsed_s, "zero": pub.zero}


class _Background(threading.Thread):
    """Run ``work`` on a thread; :meth:`result` joins it and returns (or raises) its outcome."""

    def __init__(self, work: Callable[[], Published]) -> None:
        super().__init__(daemon=True)
        self._work = work
        self._out: Published | None = None
        self._exc: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._out = self._work()
        except BaseException as exc:  # handed to the caller by result()
            self._exc = exc

    def result(self) -> Published:
        self.join()
        if self._exc is not None:
            raise self._exc
        assert self._out is not None
        return self._out


def run(scale: Scale) -> list[Result]:
    """The section's rows: the subscriber's rate and CPU per message (vs the bare loop's)
    and its loss. The two take turns, twice in a full run; the best turn of each counts
    (the machine is shared: a turn can lose its core to a neighbour), the losses of all."""
    n = scale.n(500_000, 5_000)
    chunks = packed(keys.channel(CHANNEL), envelopes(n, src=f"bench-{os.getpid()}"))
    raws: list[dict[str, float]] = []
    subs: list[dict[str, float]] = []
    with throwaway_server(*NO_CUTOFF) as server:
        for turn in range(scale.n(2, 1)):
            raws.append(run_raw(server, chunks, n))
            subs.append(run_subscriber(server, chunks, n, name=f"flood-{turn}"))
    raw = max(raws, key=lambda r: r["rate"])
    sub = max(subs, key=lambda r: r["rate"])
    # a loss at the very end of a flood has no later seq to reveal it: n - received counts it
    lost = sum(max(s["lost"], n - s["received"]) for s in subs)
    detail = {k: sum(s[k] for s in subs) for k in
              ("received", "lost", "duplicates", "out_of_order", "reconnects")}  # fmt: skip
    turns = {
        "subscriber": [round(s["rate"]) for s in subs],
        "raw": [round(r["rate"]) for r in raws],
    }
    raw_cpu = min(r["cpu_s"] for r in raws) / n * 1e6
    sub_cpu = min(s["cpu_s"] for s in subs) / n * 1e6
    return [
        Result(SECTION, RECEIVED, sub["rate"], "msg/s", ref=RAW, target=TARGET_RATE,
               extra={"n": n, "span_s": sub.get("span_s", 0.0), "cpu_s": sub["cpu_s"],
                      "publish_rate": sub["publish_rate"], "turns": turns}),
        Result(SECTION, "subscriber lost", lost, "msgs", higher_is_better=False, target="0",
               extra={"n": n * len(subs), "published_to_nobody": sum(s["zero"] for s in subs),
                      **detail}),
        Result(SECTION, RAW, raw["rate"], "msg/s",
               extra={"n": n, "received": raw["received"], "span_s": raw["span_s"],
                      "cpu_s": raw["cpu_s"], "publish_rate": raw["publish_rate"]}),
        Result(SECTION, "subscriber CPU per message", sub_cpu, "µs", ref=RAW_CPU,
               higher_is_better=False, extra={"turns": [s["cpu_s"] for s in subs]}),
        Result(SECTION, RAW_CPU, raw_cpu, "µs", extra={"turns": [r["cpu_s"] for r in raws]}),
    ]  # fmt: skip


def raw_loop(port: int, channel_key: str, n: int, idle_s: float = 5.0) -> dict[str, float]:
    """Subscribe, then ``get_message`` in a tight loop until ``n`` messages (or ``idle_s``
    of silence): the most redis-py delivers, nothing decoded."""
    client = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel_key)
    count = 0
    first = last = time.monotonic()
    cpu = 0.0
    while count < n:
        msg = pubsub.get_message(timeout=idle_s)
        if msg is None:
            if time.monotonic() - last >= idle_s:
                break
            continue
        last = time.monotonic()
        if not count:
            first, cpu = last, time.process_time()
        count += 1
    cpu = time.process_time() - cpu
    pubsub.close()
    rate = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return {"received": count, "rate": rate, "span_s": last - first, "cpu_s": cpu}


def main(argv: list[str]) -> int:
    """``raw PORT CHANNEL N``: the bare loop, its figures as one JSON line on stdout."""
    if len(argv) != 4 or argv[0] != "raw":
        print("usage: python -m loadtest.bench.flood raw PORT CHANNEL N", file=sys.stderr)
        return 2
    print(json.dumps(raw_loop(int(argv[1]), argv[2], int(argv[3]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
