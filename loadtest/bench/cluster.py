"""The bus on a Redis Cluster of one shard beside one of three shards: the rates, and what each
shard costs.

Two clusters run side by side on loopback for the whole section, every node a redis-server of
its own with no persistence (AOF off, no RDB snapshots: the same server as the other sections,
plus ``cluster-enabled``), no replicas (this measures throughput, not failover):

- 1 shard: one node holding all 16384 slots (``CLUSTER ADDSLOTSRANGE 0 16383``);
- 3 shards: three primaries joined by ``redis-cli --cluster create --cluster-replicas 0``.

The bus reaches both as users do, through ``BUS_CLUSTER_NODES`` (:mod:`producer.cluster`
routes each command to the primary of its key's slot). :data:`QUEUES` queues are named by
their slot so that on three shards they lie two on each (every key of a queue carries the hash
tag ``{q}``: one queue lives on one shard); the same names go to the one shard. The stats of
every process share the tag ``{stats}``, so one of the three shards also takes every worker's
stats writes (every 20 ms each).

A round on one cluster: a :class:`producer.Producer` (``push_many``, batches of
:data:`PUSH_BATCH`) pushes N messages to each queue, one thread per queue, timed together (the
push rate). Each backlog is set aside (RENAME to a key of the same hash tag, so of the same
slot), one ``python -m consumers worker`` per queue (at-least-once, batch 100, no-op handler,
stats every 20 ms) is started and left idle, and every backlog appears at once (RENAME back);
the clock stops when every worker's stats count its N messages handled (polled every 5 ms):
the drain rate of all queues together. Rounds alternate, 1 shard then 3 shards, after an
untimed small one on each (scripts loaded, servers warm), and each row keeps its best round.

The cost per shard is CPU time (Linux's schedstat, every thread) over the push and the drain:
each redis-server's per 1000 messages of the queues it holds (on one shard, all of them), the
mean of the three shards, and the busiest (the one that also holds ``{stats}``); the workers'
and the producer's per message. The ``extra`` of those rows splits each shard's CPU between
push and drain and counts how often its event loop went to sleep for want of work (voluntary
context switches per 1000 messages): a server less busy serves fewer commands per wake-up.

Why three shards do not triple the rates: every process of the section shares the machine's
cores (on two cores: six workers, the producer, the bench's own polling and three
redis-servers). A worker spends several times the CPU per message that Redis does (decoding,
the handler call, its stats), so the drain is bound by the workers' CPU, not by one Redis
thread, and more shards add servers that compete for the same cores; the push comes from one
Python process whose threads share one GIL, so it is bound by that process, not by Redis.
Sharding pays when one Redis thread is the limit and the shards have cores of their own; the
rows show where the machine stands (the drain rows' ``extra`` gives how busy each redis-server
and the workers were, in cores).

Every round is accounted for, or the section fails: each queue's worker handled exactly its N
messages (no failure, retry, recovery or dead letter counted), and no node holds a message of
any queue afterwards (pending, set aside, processing or dead).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.bench.common import POLL_S, PYTHON, Result, Scale, clean_env, spawn, stop
from loadtest.bench.shards import URL, Cluster, cluster, spread
from loadtest.bench.tracking import cpu_s
from loadtest.harness.waits import wait_for
from producer import Producer, keys, make_client
from producer.cluster import ClusterClient, slot_of

SECTION = "cluster"
QUEUES = 6  # two per shard on three shards
PUSH_BATCH = 100
WORKER_BATCH = 100

PUSH_1, PUSH_3 = (f"push_many, {s}, batches of {PUSH_BATCH}" for s in ("1 shard", "3 shards"))
DRAIN_1, DRAIN_3 = (f"drain, {s}" for s in ("1 shard", "3 shards"))
REDIS_1 = "Redis CPU per 1000 msg, 1 shard"
REDIS_3 = "Redis CPU per 1000 msg of its queues, 3 shards, mean of the shards"
REDIS_3_BUSIEST = "Redis CPU per 1000 msg of its queues, 3 shards, busiest shard"
WORKER_1, WORKER_3 = (f"worker CPU per message, {s}" for s in ("1 shard", "3 shards"))
PRODUCER_1, PRODUCER_3 = (f"producer CPU per message, {s}" for s in ("1 shard", "3 shards"))
PER_1000 = "ms/1000 msg"


# -- one round -----------------------------------------------------------------------------------


def staging(queue: str) -> str:
    """Where a backlog waits while the workers start (the queue's hash tag: the same slot)."""
    return f"{keys.PREFIX}:{{{queue}}}:staging"


@dataclass
class Phase:
    """What one timed phase cost: wall time, the CPU time of the client side (the producer's
    process, or the workers together), and each redis-server's CPU time and sleeps (in the
    order of the nodes)."""

    wall_s: float
    client_s: float
    redis_s: list[float]
    redis_sleeps: list[int]  # voluntary context switches of its event loop: waits for work


@dataclass
class Round:
    """One push and drain on one cluster, and what the drain left."""

    shards: int
    per_queue: int
    queues: list[str]
    on_node: list[int]  # messages of the queues each node holds
    stats_node: int  # the node that holds {stats}
    push: Phase
    drain: Phase
    handled: dict[str, int]  # queue -> its worker's count
    troubles: dict[str, int]  # failed, retried, recovered, dead-lettered, summed over workers
    left: dict[str, int]  # key -> items it holds, of any queue, on any node, after the drain

    @property
    def messages(self) -> int:
        return self.per_queue * len(self.queues)

    def per_1000(self, phase: Phase | None = None) -> list[float]:
        """Each node's CPU, ms per 1000 messages of the queues it holds (push and drain)."""
        spent = [p + d for p, d in zip(self.push.redis_s, self.drain.redis_s, strict=True)]
        if phase is not None:
            spent = phase.redis_s
        return [1e6 * s / m for s, m in zip(spent, self.on_node, strict=True)]

    def sleeps_per_1000(self, phase: Phase) -> list[float]:
        """Each node's sleeps in ``phase`` per 1000 messages of the queues it holds."""
        return [1000 * s / m for s, m in zip(phase.redis_sleeps, self.on_node, strict=True)]


def sleeps(pid: int) -> int:
    """How many times the main thread of process ``pid`` has gone to sleep so far (Linux's
    voluntary context switches): a redis-server's event loop sleeps when it has nothing to do."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise RuntimeError(f"no voluntary_ctxt_switches for pid {pid}")


def _redis_now(c: Cluster) -> list[tuple[float, int]]:
    """Each redis-server's CPU time and sleeps so far."""
    return [(cpu_s(node.pid), sleeps(node.pid)) for node in c.nodes]


def _phase(c: Cluster, wall_s: float, client_s: float, before: list[tuple[float, int]]) -> Phase:
    after = _redis_now(c)
    return Phase(wall_s, client_s, [a[0] - b[0] for a, b in zip(after, before, strict=True)],
                 [a[1] - b[1] for a, b in zip(after, before, strict=True)])  # fmt: skip


def push(c: Cluster, producer: Producer, queues: Sequence[str], n: int) -> Phase:
    """``n`` messages to each queue, one thread per queue, ``PUSH_BATCH`` per call; timed from
    the moment every thread is ready to the moment the last is done."""
    ready = threading.Barrier(len(queues) + 1)
    errors: list[BaseException] = []

    def pusher(queue: str) -> None:
        try:
            ready.wait(30)
            for start in range(0, n, PUSH_BATCH):
                producer.push_many(range(start, min(start + PUSH_BATCH, n)), queue)
        except BaseException as exc:
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=pusher, args=(q,), daemon=True) for q in queues]
    for thread in threads:
        thread.start()
    redis_before, cpu = _redis_now(c), time.process_time()
    try:
        ready.wait(30)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a push thread failed before the start: {errors!r}") from None
    started = time.perf_counter()
    for thread in threads:
        thread.join(max(0.0, started + 300 - time.perf_counter()))
    wall = time.perf_counter() - started
    spent = _phase(c, wall, time.process_time() - cpu, redis_before)
    if errors:
        raise RuntimeError(f"a push failed: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError("a push thread is still running after 300 s")
    return spent


def _leftovers(c: Cluster, queues: Sequence[str]) -> dict[str, int]:
    """Every list of the queues that still holds an item, on any node (each node scanned on its
    own: a key is on the node of its slot only), with its length; any other key of a queue too,
    as -1 (a queue's keys are all gone after a clean drain, but for its counters)."""
    left: dict[str, int] = {}
    for node in c.nodes:
        client = node.client()
        try:
            for queue in queues:
                for key in client.scan_iter(match=f"{keys.PREFIX}:{{{queue}}}:*", count=1000):
                    if key.decode() == keys.counts(queue):
                        continue
                    kind = client.type(key)
                    name = key.decode()
                    left[name] = int(client.llen(key)) if kind == b"list" else -1
        finally:
            client.close()
    return left


def drain(c: Cluster, queues: Sequence[str], n: int, tag: str) -> Round:
    """Push ``n`` messages to each queue, then time one idle, connected worker per queue
    draining them all; account for every message."""
    c.flushall()
    settings = c.settings(queues)
    admin = make_client(settings, "admin", f"bench-{tag}")
    assert isinstance(admin, ClusterClient)
    names = {q: f"bench-{tag}-{q}" for q in queues}
    stats_keys = [keys.stats("worker", f"{q}:{names[q]}") for q in queues]

    def counts(field: str) -> list[int]:
        pipe = admin.pipeline(transaction=False)  # one node: the stats share {stats}
        for key in stats_keys:
            pipe.hget(key, field)
        return [int(v or 0) for v in pipe.execute()]

    try:
        pushed, drained = _push_and_drain(c, admin, queues, n, tag, names, counts)
        wait_for(
            lambda: all(admin.zscore(keys.consumers(q), names[q]) is None for q in queues),
            10,
            "the workers to stop",
            0.05,
        )
        handled = dict(zip(queues, counts("handled"), strict=True))
        troubles = {f: sum(counts(f)) for f in ("failed", "retried", "recovered", "dead_lettered")}
    finally:
        admin.close()
    on_node = [0] * c.shards
    for queue in queues:
        on_node[c.owner(slot_of(keys.pending(queue)))] += n
    done = Round(c.shards, n, list(queues), on_node, c.owner(slot_of(keys.STATS)), pushed,
                 drained, handled, troubles, _leftovers(c, queues))  # fmt: skip
    if any(h != n for h in handled.values()) or any(troubles.values()) or done.left:
        raise RuntimeError(f"{tag}: {n} messages pushed to each queue, yet handled {handled}, "
                           f"{troubles}, left on the nodes {done.left}")  # fmt: skip
    return done


def _push_and_drain(c: Cluster, admin: ClusterClient, queues: Sequence[str], n: int, tag: str,
                    names: dict[str, str], counts: Callable[[str], list[int]],
                    ) -> tuple[Phase, Phase]:  # fmt: skip
    """The two timed phases of :func:`drain`; every worker stopped when it returns or raises."""
    producer = Producer.from_settings(c.settings(queues), name=f"bench-{tag}")
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for queue in queues:  # the slot map read and each node's pool made before the clock
            producer.client.exists(keys.pending(queue))
        pushed = push(c, producer, queues, n)
        depths = {q: int(admin.llen(keys.pending(q))) for q in queues}
        if any(depth != n for depth in depths.values()):
            raise RuntimeError(f"{tag}: {n} pushed to each queue, yet pending holds {depths}")
        for queue in queues:
            admin.rename(keys.pending(queue), staging(queue))
        env = clean_env(BUS_CLUSTER_NODES=",".join(c.addresses), BUS_REDIS_URL=URL,
                        BUS_QUEUES=",".join(queues), BUS_BATCH_SIZE=str(WORKER_BATCH),
                        BUS_STATS_INTERVAL_S="0.02")  # fmt: skip
        for queue in queues:
            workers[queue] = spawn([PYTHON, "-m", "consumers", "worker", "--queue", queue,
                                    "--name", names[queue], "--delivery", "at-least-once",
                                    "--handler", "consumers.handlers:noop",
                                    "--log-level", "WARNING"], env)  # fmt: skip

        def registered() -> bool:
            for queue, proc in workers.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{tag}: the worker of {queue} exited ({proc.returncode})")
            return all(admin.zscore(keys.consumers(q), names[q]) is not None for q in queues)

        wait_for(registered, 60, "the workers to start", 0.05)
        worker_before = sum(cpu_s(p.pid) for p in workers.values())
        redis_before = _redis_now(c)
        renames = admin.pipeline(transaction=False)  # one pipeline per node
        for queue in queues:
            renames.rename(staging(queue), keys.pending(queue))
        started = time.perf_counter()
        renames.execute()
        wait_for(lambda: all(h >= n for h in counts("handled")), 120, f"the drain ({tag})", POLL_S)
        wall = time.perf_counter() - started
        worker_cpu = sum(cpu_s(p.pid) for p in workers.values()) - worker_before
        drained = _phase(c, wall, worker_cpu, redis_before)
        return pushed, drained
    finally:
        for proc in workers.values():
            stop(proc)
        producer.client.close()


# -- the section ---------------------------------------------------------------------------------


def run(scale: Scale) -> list[Result]:
    n = scale.n(40_000, 500)
    rounds: dict[int, list[Round]] = {1: [], 3: []}
    with cluster(1) as one, cluster(3) as three:
        queues = spread(three, QUEUES)
        for c in (one, three):  # untimed: scripts loaded, servers warm
            drain(c, queues, 100, f"warmup-{c.shards}")
        for turn in range(scale.n(3, 1)):
            for c in (one, three):
                rounds[c.shards].append(drain(c, queues, n, f"{turn}-{c.shards}"))
    return rows(rounds)


def _best(got: list[Round], figure: Callable[[Round], float]) -> Round:
    """The round of ``got`` with the lowest ``figure`` (a time or a cost)."""
    return min(got, key=figure)


def rows(rounds: dict[int, list[Round]]) -> list[Result]:
    """The section's rows: each figure from the best round of its cluster (fastest, least
    CPU)."""
    first = rounds[1][0]
    n, queues = first.per_queue, first.queues
    worker = (f"{len(queues)} workers, one per queue, at-least-once, batch {WORKER_BATCH}, "
              "no-op handler")  # fmt: skip
    out: list[Result] = []

    def rate(shards: int, what: str) -> float:
        return max(r.messages / getattr(r, what).wall_s for r in rounds[shards])

    def common(shards: int) -> dict[str, Any]:
        got = rounds[shards]
        return {"queues": queues, "messages_per_queue": n, "messages": got[0].messages,
                "shards": shards, "handled": [r.handled for r in got],
                "left": [r.left for r in got]}  # fmt: skip

    for shards, name, ref in ((1, PUSH_1, None), (3, PUSH_3, PUSH_1)):
        out.append(Result(SECTION, name, rate(shards, "push"), "msg/s", ref=ref,
                          extra=dict(common(shards), threads=len(queues),
                                     rounds=[round(r.messages / r.push.wall_s)
                                             for r in rounds[shards]])))  # fmt: skip
    for shards, name, ref in ((1, DRAIN_1, None), (3, DRAIN_3, DRAIN_1)):
        best = _best(rounds[shards], lambda r: r.drain.wall_s)
        busy = [round(s / best.drain.wall_s, 2) for s in best.drain.redis_s]
        workers_busy = round(best.drain.client_s / best.drain.wall_s, 2)
        out.append(Result(SECTION, name, rate(shards, "drain"), "msg/s", ref=ref,
                          extra=dict(common(shards), worker=worker,
                                     rounds=[round(r.messages / r.drain.wall_s)
                                             for r in rounds[shards]],
                                     redis_busy_cores=busy,
                                     workers_busy_cores=workers_busy)))  # fmt: skip

    def shard_extra(r: Round) -> dict[str, Any]:
        return {"per_shard": [round(v, 3) for v in r.per_1000()],
                "push_per_shard": [round(v, 3) for v in r.per_1000(r.push)],
                "drain_per_shard": [round(v, 3) for v in r.per_1000(r.drain)],
                "push_sleeps_per_1000_per_shard": [round(v) for v in r.sleeps_per_1000(r.push)],
                "drain_sleeps_per_1000_per_shard": [round(v) for v in r.sleeps_per_1000(r.drain)],
                "messages_per_shard": r.on_node, "stats_shard": r.stats_node,
                "of": "redis-server CPU over push and drain, ms per 1000 messages of the "
                      "queues the shard holds"}  # fmt: skip

    one = _best(rounds[1], lambda r: r.per_1000()[0])
    mean = _best(rounds[3], lambda r: sum(r.per_1000()) / 3)
    busiest = _best(rounds[3], lambda r: max(r.per_1000()))
    out += [
        Result(SECTION, REDIS_1, one.per_1000()[0], PER_1000, higher_is_better=False,
               extra=shard_extra(one)),
        Result(SECTION, REDIS_3, sum(mean.per_1000()) / 3, PER_1000, ref=REDIS_1,
               higher_is_better=False, extra=shard_extra(mean)),
        Result(SECTION, REDIS_3_BUSIEST, max(busiest.per_1000()), PER_1000, ref=REDIS_1,
               higher_is_better=False, extra=shard_extra(busiest)),
    ]  # fmt: skip
    for shards, name, ref in ((1, WORKER_1, None), (3, WORKER_3, WORKER_1)):
        per = [1e6 * r.drain.client_s / r.messages for r in rounds[shards]]
        out.append(Result(SECTION, name, min(per), "µs", ref=ref, higher_is_better=False,
                          extra={"of": "the workers' CPU over the drain, together, per message",
                                 "rounds": [round(v, 2) for v in per]}))  # fmt: skip
    for shards, name, ref in ((1, PRODUCER_1, None), (3, PRODUCER_3, PRODUCER_1)):
        per = [1e6 * r.push.client_s / r.messages for r in rounds[shards]]
        out.append(Result(SECTION, name, min(per), "µs", ref=ref, higher_is_better=False,
                          extra={"of": "the pushing process's CPU over the push, per message",
                                 "rounds": [round(v, 2) for v in per]}))  # fmt: skip
    return out
