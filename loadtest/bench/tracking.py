"""What tracked messages cost, and what they cost the messages that are not tracked.

One redis-server, one ``python -m consumers worker`` at a time (at-least-once, batch 100, no-op
handler, stats on), three drains of a backlog side by side:

- untracked messages on a queue without the gate ``bus:{q}:tracking``: what every user who
  tracks nothing gets (the reference row);
- untracked messages while the gate is open (one tracked message was pushed first, so the
  scripts read the gate and look for ``"track"`` in each message they claim);
- tracked messages: each claim and settle writes the message's record.

Each backlog is pushed by a :class:`producer.Producer` (``push_many``, batches of 100), which
times the push of untracked and of tracked messages; then it is set aside (RENAME, same hash
slot), the worker is started and left idle, and the backlog appears at once (RENAME back); the
clock stops when the worker's stats count every message handled (written every 20 ms, polled
every 5 ms). The three drains go round three times, interleaved (after a small one that loads
the scripts), and each row keeps its best round.

The cost of tracking per message is stated three ways: from the rates (1/rate tracked - 1/rate
untracked), and from the CPU time (Linux's schedstat) the worker or the producer and
redis-server spent per message, tracked less untracked: where the cost is paid, in figures that
hold better than the rates when other work shares the cores. The same for an open gate.

Every drain is accounted for, or the section fails: every message handled, no list left
holding one, no dead letter; every tracked message's record says ``handled``, and no untracked
message has a record. The Redis memory a record takes is the growth of ``used_memory`` over a
tracked round (from before the push to after the drain), less the growth over an untracked one
(the same messages, the same worker), per message.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from loadtest.bench.common import (
    POLL_S,
    PYTHON,
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
from producer import Producer, keys

SECTION = "tracking"
QUEUE = "bench"
STAGING = f"{keys.PREFIX}:{{{QUEUE}}}:staging"  # the backlog waits here (same slot)
PUSH_BATCH = 100
WORKER_BATCH = 100

BASELINE = "drain untracked, no gate"
GATE_OPEN = "drain untracked, gate open"
TRACKED = "drain tracked"
PUSH_UNTRACKED = f"push_many untracked, batches of {PUSH_BATCH}"
PUSH_TRACKED = f"push_many tracked, batches of {PUSH_BATCH}"
DRAIN_COST = "tracking cost per message, drain"
PUSH_COST = "tracking cost per message, push"
GATE_COST = "open gate cost per untracked message, drain"
RATES, REDIS_CPU = "from the rates", "Redis CPU"
WORKER_CPU, PRODUCER_CPU = "worker CPU", "producer CPU"
MEMORY = "Redis memory per record (handled)"
KINDS = (BASELINE, GATE_OPEN, TRACKED)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def cpu_s(pid: int) -> float:
    """CPU time of every thread of process ``pid`` so far, seconds (Linux's schedstat, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@dataclass
class Spent:
    """What one timed step cost: wall time, and the CPU time of the process doing the work and
    of redis-server."""

    wall_s: float
    cpu_s: float
    redis_s: float


def push(server: RedisServer, producer: Producer, n: int, track: bool) -> Spent:
    """What ``producer`` takes to push ``n`` messages, ``PUSH_BATCH`` per call."""
    wall, cpu, redis_cpu = time.perf_counter(), time.process_time(), cpu_s(server.pid)
    for start in range(0, n, PUSH_BATCH):
        producer.push_many(range(start, min(start + PUSH_BATCH, n)), QUEUE, track=track)
    return Spent(time.perf_counter() - wall, time.process_time() - cpu,
                 cpu_s(server.pid) - redis_cpu)  # fmt: skip


@dataclass
class Drained:
    """One round of one kind: what its push and its drain cost, and what the drain left."""

    kind: str
    messages: int  # in the backlog (the gate-open one has one tracked message more)
    tracked: int
    push: Spent  # the n messages of the kind (not the one that opens the gate)
    drain: Spent  # cpu_s: the worker's
    handled: int  # the worker's count
    left: int  # in pending, staging, processing or dead after the drain
    records: dict[str, int]  # state -> how many records of the queue are in it
    memory_growth: int  # used_memory after the drain (worker stopped) less before the push

    @property
    def rate(self) -> float:
        return self.messages / self.drain.wall_s


def records(client: redis.Redis) -> dict[str, int]:
    """How many records of the queue are in each state."""
    found: set[bytes] = set()
    for key in client.scan_iter(match=keys.record(QUEUE, "*"), count=10_000):
        found.add(key)
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.hget(key, "state")
    counts: dict[str, int] = {}
    for state in pipe.execute():
        name = state.decode() if state else "none"
        counts[name] = counts.get(name, 0) + 1
    return counts


def drain(server: RedisServer, kind: str, n: int, name: str) -> Drained:
    """Push the backlog of ``kind``, then time one idle, connected worker draining it."""
    client = server.plain_client()
    client.flushall()
    before = used_memory(client)
    producer = Producer(server.plain_client(), src="bench")
    tracked = 0
    if kind == GATE_OPEN:
        producer.push("opens the gate", QUEUE, track=True)
        tracked = 1
    pushed = push(server, producer, n, track=kind == TRACKED)
    if kind == TRACKED:
        tracked = n
    producer.client.connection_pool.disconnect()
    messages = n + (1 if kind == GATE_OPEN else 0)
    if client.llen(keys.pending(QUEUE)) != messages:
        raise RuntimeError(f"{kind}: the push left {client.llen(keys.pending(QUEUE))} pending")
    client.rename(keys.pending(QUEUE), STAGING)
    env = clean_env(BUS_REDIS_URL=server.url, BUS_QUEUES=QUEUE,
                    BUS_BATCH_SIZE=str(WORKER_BATCH), BUS_STATS_INTERVAL_S="0.02")  # fmt: skip
    proc = spawn([PYTHON, "-m", "consumers", "worker", "--queue", QUEUE, "--name", name,
                  "--delivery", "at-least-once", "--handler", "consumers.handlers:noop",
                  "--log-level", "WARNING"], env)  # fmt: skip
    stats_key = keys.stats("worker", f"{QUEUE}:{name}")

    def handled() -> int:
        return int(client.hget(stats_key, "handled") or 0)

    try:
        wait_for(lambda: registered(client, QUEUE, name), 30, "worker start", POLL_S)
        worker_cpu, redis_cpu = cpu_s(proc.pid), cpu_s(server.pid)
        started = time.perf_counter()
        client.rename(STAGING, keys.pending(QUEUE))
        wait_for(lambda: handled() >= messages, WAIT_S, f"the drain ({kind})", POLL_S)
        drained = Spent(time.perf_counter() - started, cpu_s(proc.pid) - worker_cpu,
                        cpu_s(server.pid) - redis_cpu)  # fmt: skip
    finally:
        stop(proc)
    wait_for(lambda: client.zscore(keys.consumers(QUEUE), name) is None, 10, "worker stop", POLL_S)
    left = sum(int(client.llen(key)) for key in (keys.pending(QUEUE), STAGING,
               keys.processing(QUEUE, name), keys.dead(QUEUE)))  # fmt: skip
    time.sleep(0.05)  # Redis has closed the stopped worker's connection
    growth = used_memory(client) - before  # before the records are read: no reply buffers
    done = Drained(kind, messages, tracked, pushed, drained, handled(), left,
                   records(server.plain_client()), growth)  # fmt: skip
    want = {"handled": tracked} if tracked else {}
    if done.handled != messages or done.left or done.records != want:
        raise RuntimeError(f"{kind}: {messages} messages, {tracked} of them tracked, yet "
                           f"{done.handled} handled, {done.left} left in a list or dead, "
                           f"records {done.records}")  # fmt: skip
    return done


def run(scale: Scale) -> list[Result]:
    n = scale.n(40_000, 1_000)
    rounds: dict[str, list[Drained]] = {kind: [] for kind in KINDS}
    with throwaway_server() as server:
        # Untimed: every script the rounds use gets loaded (Redis's script cache would count in
        # the first round's memory growth) and Redis warms up.
        drain(server, TRACKED, 100, "bench-tracking-warmup")
        for turn in range(scale.n(3, 1)):
            for i, kind in enumerate(KINDS):
                rounds[kind].append(drain(server, kind, n, f"bench-tracking-{turn}-{i}"))
    return rows(rounds, n)


def _us(seconds: float, n: int) -> float:
    return 1e6 * seconds / n


def rows(rounds: dict[str, list[Drained]], n: int) -> list[Result]:
    """The section's rows from every round: each kind's best (fastest, least CPU) round."""
    rate = {kind: max(d.rate for d in got) for kind, got in rounds.items()}
    push_rate = {kind: max(n / d.push.wall_s for d in got) for kind, got in rounds.items()}
    # CPU per message, µs: (wall, worker or producer, redis) for each drain and push.
    drain_us = {kind: (1e6 / rate[kind],
                       min(_us(d.drain.cpu_s, d.messages) for d in got),
                       min(_us(d.drain.redis_s, d.messages) for d in got))
                for kind, got in rounds.items()}  # fmt: skip
    push_us = {kind: (1e6 / push_rate[kind],
                      min(_us(d.push.cpu_s, n) for d in got),
                      min(_us(d.push.redis_s, n) for d in got))
               for kind, got in rounds.items()}  # fmt: skip

    def drain_extra(kind: str) -> dict[str, Any]:
        got = rounds[kind]
        return {"messages": got[0].messages, "tracked": got[0].tracked,
                "rounds": [round(d.rate) for d in got],
                "worker_cpu_us_per_msg": round(drain_us[kind][1], 2),
                "redis_cpu_us_per_msg": round(drain_us[kind][2], 2),
                "handled": [d.handled for d in got], "left": [d.left for d in got],
                "records": [d.records for d in got]}  # fmt: skip

    def push_extra(kind: str) -> dict[str, Any]:
        return {"messages": n, "rounds": [round(n / d.push.wall_s) for d in rounds[kind]],
                "producer_cpu_us_per_msg": round(push_us[kind][1], 2),
                "redis_cpu_us_per_msg": round(push_us[kind][2], 2)}  # fmt: skip

    def costs(what: str, of: str, ref: str, us: dict[str, tuple[float, float, float]],
              who: str, rows: tuple[str, str]) -> list[Result]:  # fmt: skip
        """``what`` per message three ways: 1/rate, the client's CPU, Redis's CPU."""
        return [Result(SECTION, f"{what} ({how})" if i == 0 else f"{what}: {how}",
                       us[of][i] - us[ref][i], "µs", higher_is_better=False,
                       extra={"of": f"{how}: {rows[0]} - {rows[1]}, per message"})
                for i, how in enumerate((RATES, who, REDIS_CPU))]  # fmt: skip

    # The memory of the records: the tracked rounds grew Redis by more than the untracked ones
    # (the same messages, drained by the same worker), the difference is their records.
    growth = {kind: min(d.memory_growth for d in rounds[kind]) for kind in (BASELINE, TRACKED)}
    worker = f"1 worker, at-least-once, batch {WORKER_BATCH}, no-op handler"
    return [
        Result(SECTION, BASELINE, rate[BASELINE], "msg/s",
               extra=dict(drain_extra(BASELINE), worker=worker)),
        Result(SECTION, GATE_OPEN, rate[GATE_OPEN], "msg/s", ref=BASELINE,
               extra=drain_extra(GATE_OPEN)),
        Result(SECTION, TRACKED, rate[TRACKED], "msg/s", ref=BASELINE,
               extra=drain_extra(TRACKED)),
        Result(SECTION, PUSH_UNTRACKED, push_rate[BASELINE], "msg/s",
               extra=push_extra(BASELINE)),
        Result(SECTION, PUSH_TRACKED, push_rate[TRACKED], "msg/s", ref=PUSH_UNTRACKED,
               extra=push_extra(TRACKED)),
        *costs(DRAIN_COST, TRACKED, BASELINE, drain_us, WORKER_CPU, (TRACKED, BASELINE)),
        *costs(PUSH_COST, TRACKED, BASELINE, push_us, PRODUCER_CPU,
               (PUSH_TRACKED, PUSH_UNTRACKED)),
        *costs(GATE_COST, GATE_OPEN, BASELINE, drain_us, WORKER_CPU, (GATE_OPEN, BASELINE)),
        Result(SECTION, MEMORY, (growth[TRACKED] - growth[BASELINE]) / n, "B",
               higher_is_better=False,
               extra={"records": n, "used_memory_growth": growth,
                      "of": "(growth over the tracked drain - over the untracked one) / records"}),
    ]  # fmt: skip
