"""One worker process draining a backlog, beside what Redis allows and what the naive loops do.

Ours: ``python -m consumers worker`` (no-op handler, full envelope decoding, stats on), already
connected and idle when N envelopes appear in ``bus:{bench}:pending`` at once (one MULTI: the
clock starts when its EXEC is answered, as the references' clocks start with their backlog in
place); the clock stops when its stats hash counts N handled (written every 20 ms, polled every
5 ms).
Batched (``BUS_BATCH_SIZE=100``, the default) and one at a time (``BUS_BATCH_SIZE=1``: one
claim and one settle per message, the cost of the guarantees when there is no backlog).

References, each draining the same N from Python in this process (redis-py, with hiredis when
installed), no decoding, no stats:

- raw claim 100 + ack: a script of 100 LMOVEs (lua/claim_lmove.lua) and one that LREMs the
  batch (lua/ack_lrem.lua);
- raw ``RPOP q 100``;
- naive at-least-once loop: ``BLMOVE pending processing`` then ``LREM processing``, one by one;
- naive at-most-once loop: ``BRPOP q 1``, one by one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from loadtest.bench.common import (
    POLL_S,
    PYTHON,
    ROOT,
    WAIT_S,
    Result,
    Scale,
    clean_env,
    registered,
    spawn,
)
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer.connection.scripting import Script
from producer.store import envelope, keys

SECTION = "drain"
QUEUE = "bench"
LUA = Path(__file__).with_name("lua")
CLAIM = Script("claim_lmove", (LUA / "claim_lmove.lua").read_text())
ACK = Script("ack_lrem", (LUA / "ack_lrem.lua").read_text())


def encoded(n: int) -> list[bytes]:
    """``n`` envelopes, encoded ahead of the clock."""
    return [envelope.new(i, src="bench", seq=i + 1, mode="prodcons").encode() for i in range(n)]


def fill(client: redis.Redis, raws: list[bytes]) -> float:
    """Make the whole backlog appear at once (one MULTI); returns the moment it did: when the
    EXEC is answered (Redis wakes a blocked worker as it applies the EXEC, just before it
    answers). Not before sending: the MULTI's bytes take about 100 ms per 100,000 envelopes to
    send and queue, during which there is nothing to take."""
    pipe = client.pipeline(transaction=True)
    for start in range(0, len(raws), 10_000):
        pipe.lpush(keys.pending(QUEUE), *raws[start : start + 10_000])
    pipe.execute()
    return time.perf_counter()


def ours(server: RedisServer, delivery: str, batch: int, raws: list[bytes], *,
         options: tuple[str, ...] = (), checkout: Path = ROOT) -> float:  # fmt: skip
    """msg/s of one idle, connected worker process draining ``raws``: the worker of
    ``checkout`` (another one: its directory first on ``PYTHONPATH``, and the current one),
    with ``options`` added to its command line."""
    client = server.plain_client()
    name = f"bench-{delivery}-{batch}"
    env = clean_env(BUS_REDIS_URL=server.url, BUS_QUEUES=QUEUE, BUS_BATCH_SIZE=str(batch),
                    BUS_STATS_INTERVAL_S="0.02")  # fmt: skip
    if checkout != ROOT:
        env["PYTHONPATH"] = str(checkout)
    proc = spawn([PYTHON, "-m", "consumers", "worker", "--queue", QUEUE, "--name", name,
                  "--delivery", delivery, "--handler", "consumers.handlers:noop",
                  "--log-level", "WARNING", *options], env, cwd=checkout)  # fmt: skip
    stats_key = keys.stats("worker", f"{QUEUE}:{name}")
    try:
        wait_for(lambda: registered(client, QUEUE, name), 30, "worker start", POLL_S)
        started = fill(client, raws)
        wait_for(
            lambda: int(client.hget(stats_key, "handled") or 0) >= len(raws),
            WAIT_S,
            "the drain",
            POLL_S,
        )
        elapsed = time.perf_counter() - started
    finally:
        stop(proc)
    client.flushall()
    return len(raws) / elapsed


Loop = Callable[[redis.Redis, int], None]


def reference(server: RedisServer, raws: list[bytes], loop: Loop) -> float:
    """msg/s of ``loop`` draining ``raws`` in this process."""
    client = server.plain_client()
    client.ping()
    fill(client, raws)
    started = time.perf_counter()
    loop(client, len(raws))
    elapsed = time.perf_counter() - started
    left = client.llen(keys.pending(QUEUE)) + client.llen(keys.processing(QUEUE, "raw"))
    client.flushall()
    if left:
        raise RuntimeError(f"a reference loop left {left} messages behind")
    return len(raws) / elapsed


def raw_claim_ack(client: redis.Redis, n: int) -> None:
    pending, proc = keys.pending(QUEUE), keys.processing(QUEUE, "raw")
    done = 0
    while done < n:
        batch = CLAIM(client, [pending, proc], [100])
        ACK(client, [proc], batch)
        done += len(batch)


def raw_rpop(client: redis.Redis, n: int) -> None:
    pending, done = keys.pending(QUEUE), 0
    while done < n:
        done += len(client.rpop(pending, 100) or [])


def naive_blmove_lrem(client: redis.Redis, n: int) -> None:
    pending, proc = keys.pending(QUEUE), keys.processing(QUEUE, "raw")
    for _ in range(n):
        raw = client.blmove(pending, proc, 1, "RIGHT", "LEFT")
        client.lrem(proc, -1, raw)  # type: ignore[arg-type]


def naive_brpop(client: redis.Redis, n: int) -> None:
    pending = keys.pending(QUEUE)
    for _ in range(n):
        client.brpop([pending], 1)


def run(scale: Scale) -> list[Result]:
    n_batched = scale.n(200_000, 2_000)
    n_single = scale.n(30_000, 500)
    with throwaway_server() as server:
        batched, single = encoded(n_batched), encoded(n_single)
        figures = {
            "raw claim 100 + ack (Lua)": reference(server, batched, raw_claim_ack),
            "redis-bus at-least-once, batch 100": ours(server, "at-least-once", 100, batched),
            "raw RPOP q 100": reference(server, batched, raw_rpop),
            "redis-bus at-most-once, batch 100": ours(server, "at-most-once", 100, batched),
            "naive BLMOVE + LREM loop": reference(server, single, naive_blmove_lrem),
            "redis-bus at-least-once, one at a time": ours(server, "at-least-once", 1, single),
            "naive BRPOP loop": reference(server, single, naive_brpop),
            "redis-bus at-most-once, one at a time": ours(server, "at-most-once", 1, single),
        }
    refs = {
        "redis-bus at-least-once, batch 100": ("raw claim 100 + ack (Lua)",
                                               ">= 100,000 msg/s and >= 0.5x"),
        "redis-bus at-most-once, batch 100": ("raw RPOP q 100", ">= 200,000 msg/s"),
        "redis-bus at-least-once, one at a time": ("naive BLMOVE + LREM loop", ">= 0.9x"),
        "redis-bus at-most-once, one at a time": ("naive BRPOP loop", ">= 0.9x"),
    }  # fmt: skip
    rows = []
    for name, rate in figures.items():
        ref, target = refs.get(name, (None, ""))
        n = n_batched if "100" in name else n_single
        rows.append(Result(SECTION, name, rate, "msg/s", ref=ref, target=target,
                           extra={"messages": n}))  # fmt: skip
    return rows
