"""What an idempotency key costs (producer/store/once.py): ``Producer.push`` one message a call,
plain beside with a new key each time (the keyed push script: a lookup, the push, the key kept)
and beside a repeat of a key already used (the lookup alone, nothing pushed).

Rows, on one private redis-server, in interleaved rounds (best of 3): the rate of each, Redis's
own time per call of each (``INFO commandstats``: what a shared Redis pays), and the memory one
kept key holds (``MEMORY USAGE``, a message of the size the drain sends).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

from loadtest.bench.common import Result, Scale
from loadtest.harness.server import throwaway_server
from producer import Producer, keys

SECTION = "idempotency"
QUEUE = "bench"
ROUNDS = 3
PLAIN = "push, 1 a call: no key"
KEYED = "push, 1 a call: a new idempotency key each"
REPEAT = "push, 1 a call: a repeat of a key (nothing pushed)"
MEMORY = "memory of one kept key (a 150-byte message)"


def _rate(client: redis.Redis, n: int, push: Callable[[Producer, int], object]) -> float:
    client.flushall()
    producer = Producer(client)
    push(producer, -1)  # the script cached before the clock starts
    start = time.perf_counter()
    for i in range(n):
        push(producer, i)
    return n / (time.perf_counter() - start)


def _usec_per_call(client: redis.Redis, n: int, push: Callable[[Producer, int], object]) -> float:
    _rate(client, 1, push)
    client.config_resetstat()
    _rate(client, n, push)
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def run(scale: Scale) -> list[Result]:
    n = scale.n(20_000, 300)
    run_id = uuid.uuid4().hex[:8]
    pushes: dict[str, Callable[[Producer, int], object]] = {
        PLAIN: lambda p, i: p.push({"n": i}, QUEUE),
        KEYED: lambda p, i: p.push({"n": i}, QUEUE, key=f"{run_id}-{i}"),
        REPEAT: lambda p, i: p.push({"n": 0}, QUEUE, key="same"),
    }
    best: dict[str, float] = {}
    low: dict[str, float] = {}
    with throwaway_server() as server:
        client = server.plain_client()
        for _ in range(ROUNDS):
            for name, push in pushes.items():
                best[name] = max(best.get(name, 0.0), _rate(client, n, push))
                low[name] = min(low.get(name, float("inf")), _usec_per_call(client, n, push))
        client.flushall()
        Producer(client).push({"order": 12345, "items": ["a", "b"]}, QUEUE, key="sized")
        kept = int(client.memory_usage(keys.once(QUEUE, "sized")) or 0)
        client.close()
    rows = [Result(SECTION, PLAIN, best[PLAIN], "msg/s")]
    rows += [Result(SECTION, name, best[name], "msg/s", ref=PLAIN) for name in (KEYED, REPEAT)]
    rows.append(Result(SECTION, f"Redis time per call: {PLAIN}", low[PLAIN], "µs",
                       higher_is_better=False))  # fmt: skip
    rows += [Result(SECTION, f"Redis time per call: {name}", low[name], "µs",
                    ref=f"Redis time per call: {PLAIN}", higher_is_better=False)
             for name in (KEYED, REPEAT)]  # fmt: skip
    rows.append(Result(SECTION, MEMORY, kept, "bytes"))
    return rows
