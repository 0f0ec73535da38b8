"""The bus on a Redis Cluster of one shard beside one of three shards: the rates, and what each
shard costs.

Two clusters run side by side on loopback for the whole section, every node a redis-server of
its own with no persistence (AOF off, no RDB snapshots: the same server as the other sections,
plus ``cluster-enabled``), no replicas (this measures throughput, not failover):

- 1 shard: one node holding all 16384 slots (``CLUSTER ADDSLOTSRANGE 0 16383``);
- 3 shards: three primaries joined by ``redis-cli --cluster create --cluster-replicas 0``.

The bus reaches both as users do, through ``BUS_CLUSTER_NODES`` (:mod:`producer.connection.cluster`
routes each command to the primary of its key's slot). :data:`QUEUES` queues are named by
their slot so that on three shards they lie two on each (every key of a queue carries the hash
tag ``{q}``: one queue lives on one shard); the same names go to the one shard. The stats of
every process share the tag ``{stats}``, so one of the three shards also takes every worker's
stats writes (every 20 ms each).

A round on one cluster (:mod:`loadtest.bench.rounds`): a :class:`producer.Producer` (``push_many``,
batches of :data:`~loadtest.bench.rounds.PUSH_BATCH`) pushes N messages to each queue, one thread
per queue, timed together (the push rate). Each backlog is set aside (RENAME to a key of the same
hash tag, so of the same slot), one ``python -m consumers worker`` per queue (at-least-once, batch
100, no-op handler, stats every 20 ms) is started and left idle, and every backlog appears at once
(RENAME back); the clock stops when every worker's stats count its N messages handled (polled every
5 ms): the drain rate of all queues together. Rounds alternate, 1 shard then 3 shards, after an
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

from collections.abc import Callable
from typing import Any

from loadtest.bench.common import Result, Scale
from loadtest.bench.rounds import PUSH_BATCH, WORKER_BATCH, Round, drain
from loadtest.bench.shards import cluster, spread

SECTION = "cluster"
QUEUES = 6  # two per shard on three shards

PUSH_1, PUSH_3 = (f"push_many, {s}, batches of {PUSH_BATCH}" for s in ("1 shard", "3 shards"))
DRAIN_1, DRAIN_3 = (f"drain, {s}" for s in ("1 shard", "3 shards"))
REDIS_1 = "Redis CPU per 1000 msg, 1 shard"
REDIS_3 = "Redis CPU per 1000 msg of its queues, 3 shards, mean of the shards"
REDIS_3_BUSIEST = "Redis CPU per 1000 msg of its queues, 3 shards, busiest shard"
WORKER_1, WORKER_3 = (f"worker CPU per message, {s}" for s in ("1 shard", "3 shards"))
PRODUCER_1, PRODUCER_3 = (f"producer CPU per message, {s}" for s in ("1 shard", "3 shards"))
PER_1000 = "ms/1000 msg"


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
