"""What the balance of a queue costs (producer/store/counts.py): every push is a script that LPUSHes
and counts, instead of a bare LPUSH. (A worker's settle adds one HINCRBY per batch of 100 to a
script that already runs: the drain section's figures include it.)

Rows, each on the same private redis-server, in interleaved rounds (best of 3):

- push, one message a call: ``LPUSH`` beside the counting push script (``EVALSHA``);
- push, 100 messages a call: the same, batched;
- Redis's own time per call of each (``INFO commandstats``), the cost a shared Redis pays.
"""

from __future__ import annotations

import time

import redis

from loadtest.bench.common import Result, Scale
from loadtest.harness.server import RedisServer, throwaway_server
from producer.store import envelope, keys, scripts

SECTION = "balance"
QUEUE = "bench"
ROUNDS = 3


def _raws(n: int) -> list[bytes]:
    return [envelope.new(i, src="bench", seq=i + 1).encode() for i in range(n)]


def _push_rate(client: redis.Redis, raws: list[bytes], batch: int, counted: bool) -> float:
    pending = keys.pending(QUEUE)
    client.delete(pending, keys.counts(QUEUE))
    client.script_load(scripts.PUSH.script)  # cached before the clock starts
    start = time.perf_counter()
    for i in range(0, len(raws), batch):
        chunk = raws[i : i + batch]
        if counted:
            scripts.PUSH(client, (pending, keys.levels_gate(QUEUE)), chunk)
        else:
            client.lpush(pending, *chunk)
    return len(raws) / (time.perf_counter() - start)


def _usec_per_call(client: redis.Redis, raws: list[bytes], batch: int, counted: bool) -> float:
    client.config_resetstat()
    _push_rate(client, raws, batch, counted)
    stat = client.info("commandstats")["cmdstat_evalsha" if counted else "cmdstat_lpush"]
    return float(stat["usec_per_call"])


def run(scale: Scale) -> list[Result]:
    n_one, n_many = scale.n(20_000, 500), scale.n(200_000, 5_000)
    one, many = _raws(n_one), _raws(n_many)
    best: dict[str, float] = {}
    low: dict[str, float] = {}

    def keep(name: str, value: float, higher: bool = True) -> None:
        if higher:
            best[name] = max(best.get(name, 0.0), value)
        else:
            low[name] = min(low.get(name, float("inf")), value)

    server: RedisServer
    with throwaway_server() as server:
        client = server.plain_client()
        for _ in range(ROUNDS):
            for counted in (False, True):
                tag = "counted" if counted else "bare"
                keep(f"push 1 {tag}", _push_rate(client, one, 1, counted))
                keep(f"push 100 {tag}", _push_rate(client, many, 100, counted))
                keep(f"us 1 {tag}", _usec_per_call(client, one, 1, counted), higher=False)
                keep(f"us 100 {tag}", _usec_per_call(client, many, 100, counted), higher=False)
        client.close()
    push1, push100 = "push, 1 a call: LPUSH", "push, 100 a call: LPUSH"
    us1, us100 = "Redis time per push call of 1: LPUSH", "Redis time per push call of 100: LPUSH"
    return [
        Result(SECTION, push1, best["push 1 bare"], "msg/s"),
        Result(SECTION, "push, 1 a call: the counting script", best["push 1 counted"], "msg/s",
               ref=push1),
        Result(SECTION, push100, best["push 100 bare"], "msg/s"),
        Result(SECTION, "push, 100 a call: the counting script", best["push 100 counted"],
               "msg/s", ref=push100),
        Result(SECTION, us1, low["us 1 bare"], "µs", higher_is_better=False),
        Result(SECTION, "Redis time per push call of 1: the counting script",
               low["us 1 counted"], "µs", ref=us1, higher_is_better=False),
        Result(SECTION, us100, low["us 100 bare"], "µs", higher_is_better=False),
        Result(SECTION, "Redis time per push call of 100: the counting script",
               low["us 100 counted"], "µs", ref=us100, higher_is_better=False),
    ]  # fmt: skip
