"""What priority levels cost (producer/store/lua/lib/levels.lua): a push at a level beside a
plain one, and a claim from a queue whose backlog is spread over four levels beside one from a
queue of priority 0 alone, both modes.

Rows, on one private redis-server, in interleaved rounds (best of 3): ``Producer.push`` one
message a call, and Redis's own time per call (``INFO commandstats``: what a shared Redis pays);
the claim script (at-least-once, into a processing list) and the take script (at-most-once)
draining a backlog 100 at a time, as a worker's claims do, in messages a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from loadtest.bench.common import Result, Scale
from loadtest.harness.server import throwaway_server
from producer import Producer, keys
from producer.store import scripts

SECTION = "priorities"
QUEUE = "bench"
ROUNDS = 3
BATCH = 100
LEVELS = (0, 3, 6, 9)
PUSH_PLAIN = "push, 1 a call: priority 0"
PUSH_LEVEL = "push, 1 a call: priority 5"
CLAIM_PLAIN = f"claim {BATCH} (at-least-once): a backlog of priority 0"
CLAIM_LEVELS = f"claim {BATCH} (at-least-once): the backlog over 4 levels"
TAKE_PLAIN = f"take {BATCH} (at-most-once): a backlog of priority 0"
TAKE_LEVELS = f"take {BATCH} (at-most-once): the backlog over 4 levels"


def _push_rate(client: redis.Redis, n: int, priority: int) -> float:
    client.flushall()
    producer = Producer(client)
    producer.push(0, QUEUE, priority=priority)  # the script cached before the clock starts
    start = time.perf_counter()
    for i in range(n):
        producer.push({"n": i}, QUEUE, priority=priority)
    return n / (time.perf_counter() - start)


def _usec_per_push(client: redis.Redis, n: int, priority: int) -> float:
    _push_rate(client, 1, priority)
    client.config_resetstat()
    _push_rate(client, n, priority)
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def _fill(client: redis.Redis, n: int, levels: tuple[int, ...]) -> None:
    client.flushall()
    producer = Producer(client)
    for level in levels:
        for start in range(0, n // len(levels), 1000):
            count = min(1000, n // len(levels) - start)
            producer.push_many([{"n": start + i} for i in range(count)], QUEUE, priority=level)


def _drain_rate(
    client: redis.Redis, n: int, levels: tuple[int, ...], step: Callable[[], int]
) -> float:
    _fill(client, n, levels)
    step()  # the script cached before the clock starts
    done, start = BATCH, time.perf_counter()
    while done < n:
        got = step()
        if not got:
            break
        done += got
    return (done - BATCH) / (time.perf_counter() - start)


def run(scale: Scale) -> list[Result]:
    n_push, n_drain = scale.n(20_000, 300), scale.n(200_000, 2_000)
    pending, processing = keys.pending(QUEUE), keys.processing(QUEUE, "bench")
    best: dict[str, float] = {}
    low: dict[str, float] = {}
    with throwaway_server() as server:
        client = server.plain_client()

        def claim() -> int:
            got = scripts.CLAIM(client, (pending, processing, keys.tracking(QUEUE)), (BATCH,))
            client.delete(processing)
            return len(got)

        def take() -> int:
            return len(scripts.TAKE(client, (pending,), (BATCH,)))

        drains = {CLAIM_PLAIN: ((0,), claim), CLAIM_LEVELS: (LEVELS, claim),
                  TAKE_PLAIN: ((0,), take), TAKE_LEVELS: (LEVELS, take)}  # fmt: skip
        for _ in range(ROUNDS):
            for name, priority in ((PUSH_PLAIN, 0), (PUSH_LEVEL, 5)):
                best[name] = max(best.get(name, 0.0), _push_rate(client, n_push, priority))
                usec = _usec_per_push(client, n_push, priority)
                low[name] = min(low.get(name, float("inf")), usec)
            for name, (levels, step) in drains.items():
                best[name] = max(best.get(name, 0.0), _drain_rate(client, n_drain, levels, step))
        client.close()
    rows = [Result(SECTION, PUSH_PLAIN, best[PUSH_PLAIN], "msg/s"),
            Result(SECTION, PUSH_LEVEL, best[PUSH_LEVEL], "msg/s", ref=PUSH_PLAIN),
            Result(SECTION, f"Redis time per call: {PUSH_PLAIN}", low[PUSH_PLAIN], "µs",
                   higher_is_better=False),
            Result(SECTION, f"Redis time per call: {PUSH_LEVEL}", low[PUSH_LEVEL], "µs",
                   ref=f"Redis time per call: {PUSH_PLAIN}", higher_is_better=False)]  # fmt: skip
    for plain, spread in ((CLAIM_PLAIN, CLAIM_LEVELS), (TAKE_PLAIN, TAKE_LEVELS)):
        rows.append(Result(SECTION, plain, best[plain], "msg/s"))
        rows.append(Result(SECTION, spread, best[spread], "msg/s", ref=plain))
    return rows
