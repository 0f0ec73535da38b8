"""One round of the cluster section (:mod:`loadtest.bench.cluster`) on one cluster: ``N``
messages pushed to each queue by one thread a queue, then drained by one idle, connected worker a
queue, each phase timed with the CPU time of the client side and of every redis-server; every
message accounted for."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.bench.common import POLL_S, PYTHON, clean_env, spawn
from loadtest.bench.shards import URL, Cluster
from loadtest.bench.tracking import cpu_s
from loadtest.harness.procs import stop
from loadtest.harness.waits import wait_for
from producer import Producer, keys, make_client
from producer.connection.cluster import ClusterClient, slot_of

PUSH_BATCH = 100
WORKER_BATCH = 100


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
