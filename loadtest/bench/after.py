"""What waiting for other messages costs (producer/store/after.py), on one private redis-server.

Rows:

- the push: ``Producer.push(track=True)`` one a call, beside a push with ``after`` naming one
  pending tracked message (its prerequisite read, the message kept aside, the link: three
  round trips), best of 3 interleaved rounds;
- the drain: one worker process (``consumers.handlers:noop``, the default 8 slots) handling
  pairs of messages where the second waits for the first (each first one's settle tells its
  waiting one, which is then claimed like any message), beside the same number of tracked
  messages that wait for nothing;
- a group of 10,000 members with one callback: the push (the members in one round trip, then
  the callback's link to each of them), and the time from the last member handled to the
  callback pending, read from their records' stamps (``handled_ms``, ``pending_ms``: both on
  Redis's clock, so no polling is measured).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from loadtest.bench.common import POLL_S, PYTHON, WAIT_S, Result, Scale, clean_env, registered
from loadtest.bench.common import spawn as spawn_child
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer import Producer, keys

SECTION = "after"
QUEUE = "bench"
ROUNDS = 3
PUSH = "push, tracked, 1 a call"
PUSH_AFTER = "push with after (1 pending prerequisite), 1 a call"
DRAIN = "drain, tracked messages, one worker"
DRAIN_AFTER = "drain, pairs: each second message waits for the first"
GROUP_PUSH = "group push: {n} members + a callback"
GROUP_LAG = "group of {n}: last member handled -> callback pending"


def _push_rate(client: redis.Redis, n: int, after: bool) -> float:
    client.flushall()
    producer = Producer(client)
    first = producer.push("prerequisite", QUEUE, track=True)
    push: Callable[[int], object] = (
        (lambda i: producer.push({"n": i}, QUEUE, after=[first]))
        if after
        else (lambda i: producer.push({"n": i}, QUEUE, track=True))
    )
    push(-1)  # the scripts cached before the clock starts
    start = time.perf_counter()
    for i in range(n):
        push(i)
    return n / (time.perf_counter() - start)


def _drain(server: RedisServer, pairs: int, after: bool) -> float:
    """msg/s of one worker process handling ``2 * pairs`` messages pushed before it starts."""
    client = server.plain_client()
    client.flushall()
    producer = Producer(client)
    firsts = producer.push_many([{"n": i} for i in range(pairs)], QUEUE, track=True)
    if after:
        for i, sent in enumerate(firsts):
            producer.push({"then": i}, QUEUE, after=[sent])
    else:
        producer.push_many([{"then": i} for i in range(pairs)], QUEUE, track=True)
    name = f"bench-after-{after}"
    env = clean_env(BUS_REDIS_URL=server.url, BUS_QUEUES=QUEUE, BUS_STATS_INTERVAL_S="0.02")
    start = time.perf_counter()
    proc = spawn_child([PYTHON, "-m", "consumers", "worker", "--queue", QUEUE, "--name", name,
                        "--handler", "consumers.handlers:noop", "--log-level", "WARNING"],
                       env)  # fmt: skip
    stats_key = keys.stats("worker", f"{QUEUE}:{name}")
    try:
        wait_for(lambda: registered(client, QUEUE, name), 30, "worker start", POLL_S)
        start = time.perf_counter()
        wait_for(lambda: int(client.hget(stats_key, "handled") or 0) >= 2 * pairs, WAIT_S,
                 "the drain", POLL_S)  # fmt: skip
        elapsed = time.perf_counter() - start
    finally:
        stop(proc)
    client.close()
    return 2 * pairs / elapsed


def _group(server: RedisServer, n: int) -> tuple[float, float]:
    """(seconds to push a group of ``n`` and its callback, ms from the last member handled to
    the callback pending), one worker process handling the members."""
    client = server.plain_client()
    client.flushall()
    producer = Producer(client)
    start = time.perf_counter()
    group = producer.group([{"n": i} for i in range(n)], then={"callback": True}, queue=QUEUE)
    pushed_s = time.perf_counter() - start
    assert group.callback is not None
    callback = keys.record(QUEUE, group.callback.envelope.id)
    name = "bench-group"
    env = clean_env(BUS_REDIS_URL=server.url, BUS_QUEUES=QUEUE)
    proc = spawn_child([PYTHON, "-m", "consumers", "worker", "--queue", QUEUE, "--name", name,
                        "--handler", "consumers.handlers:noop", "--log-level", "WARNING"],
                       env)  # fmt: skip
    try:
        wait_for(lambda: client.hget(callback, "handled_ms") is not None, WAIT_S,
                 "the callback handled", POLL_S)  # fmt: skip
    finally:
        stop(proc)
    pipe = client.pipeline(transaction=False)
    for sent in group.members:
        pipe.hget(keys.record(QUEUE, sent.envelope.id), "handled_ms")
    last = max(int(x) for x in pipe.execute())
    lag_ms = int(client.hget(callback, "pending_ms") or 0) - last
    client.close()
    return pushed_s, float(lag_ms)


def run(scale: Scale) -> list[Result]:
    n = scale.n(5_000, 200)
    pairs = scale.n(20_000, 200)
    members = scale.n(10_000, 100)
    best: dict[str, float] = {}
    with throwaway_server() as server:
        client = server.plain_client()
        for _ in range(ROUNDS):
            for name, after in ((PUSH, False), (PUSH_AFTER, True)):
                best[name] = max(best.get(name, 0.0), _push_rate(client, n, after))
        client.close()
        best[DRAIN] = _drain(server, pairs, after=False)
        best[DRAIN_AFTER] = _drain(server, pairs, after=True)
        pushed_s, lag_ms = _group(server, members)
    size = f"{members:,}"
    target = "within one settle of the last member (no mover pass waited for)"
    return [
        Result(SECTION, PUSH, best[PUSH], "msg/s"),
        Result(SECTION, PUSH_AFTER, best[PUSH_AFTER], "msg/s", ref=PUSH),
        Result(SECTION, DRAIN, best[DRAIN], "msg/s"),
        Result(SECTION, DRAIN_AFTER, best[DRAIN_AFTER], "msg/s", ref=DRAIN),
        Result(SECTION, GROUP_PUSH.format(n=size), pushed_s, "s", higher_is_better=False),
        Result(
            SECTION, GROUP_LAG.format(n=size), lag_ms, "ms", higher_is_better=False, target=target
        ),
    ]
