"""Real handlers, not no-ops: our worker beside Dramatiq, Celery, RQ, arq and SAQ on the same
jobs, each worker started as its users start it.

Three workloads, each a table of rows (:data:`WORKLOADS`); every row but an ideal one is a worker
draining the same N jobs, enqueued before it starts and counted by a counter each job ``INCR``s
(:mod:`loadtest.bench.backlog`), one private redis-server, one database per row:

1. ``sleep 20 ms``: each job sleeps 20 ms (a call to a slow service), 8 at once: our worker
   ``--concurrency 8`` (8 threads), Dramatiq ``--processes 1 --threads 8`` (its default),
   Celery ``--pool threads --concurrency 8``, and RQ's ``SimpleWorker`` (one at a time, the
   reference of a sequential loop). The ideal, 8 / 20 ms = 400 jobs/s, is a row of its own.
2. ``await 20 ms``: an ``async def`` job awaiting 20 ms, 100 at once: our worker
   ``--concurrency 100`` (one event loop), arq (``max_jobs = 100``) and SAQ (``concurrency =
   100``), run from a venv of their own (:mod:`loadtest.bench.async_peers`). Ideal: 5,000 jobs/s.
3. ``cpu 5 ms``: each job runs ~5 ms of pure-Python work (a loop count calibrated once, in the
   bench, and given to every worker): ours ``--processes 1`` and ``2`` (``--concurrency 1``),
   Dramatiq ``--processes 1`` and ``2`` (``--threads 1``), Celery ``--pool prefork
   --concurrency 1`` and ``2``: each 2-process row's ratio is over its own 1-process row.

Then the no-op drain beside the worker before concurrency (:mod:`loadtest.bench.noop_drain`) and
a hung handler among good ones (:mod:`loadtest.bench.hung`). The ratio column is each row over
its reference; the target column says what it is held to.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from loadtest.bench import async_peers, hung, noop_drain, peer_tasks
from loadtest.bench.backlog import (
    Peer,
    bus_backlog_key,
    enqueue_bus,
    enqueue_celery,
    enqueue_dramatiq,
    enqueue_rq,
    measure,
)
from loadtest.bench.common import PYTHON, Result, Scale
from loadtest.bench.peers import (
    CELERY_BACKLOG,
    DRAMATIQ_BACKLOG,
    RQ_BACKLOG,
    celery_argv,
    dramatiq_argv,
    require,
    rq_argv,
)
from loadtest.harness.server import throwaway_server

SECTION = "handlers"
UNIT = "jobs/s"
WORKER_NAME = "bench-handlers"
CPU_S = 0.005
OURS_PACKAGE = "redis-bus"
ASYNC_PEERS = {"arq", "saq"}  # in a venv of their own (loadtest.bench.async_peers)


@dataclass(frozen=True)
class Row:
    """One row of a workload: a worker draining its jobs, or (``worker`` None) the ideal rate
    ``ideal_jobs_s``. ``ref`` names the row it is compared to; ``vs_best_peer`` adds a row of
    its rate over the best peer's, held to ``best_peer_target``."""

    worker: Peer | None
    ref: str | None = None
    target: str = ""
    ideal_jobs_s: float = 0.0
    name: str = ""
    vs_best_peer: bool = False
    best_peer_target: str = ""

    @property
    def title(self) -> str:
        return self.worker.name if self.worker is not None else self.name


@dataclass(frozen=True)
class Workload:
    """A job and the rows that drain N of them (``n_full``, or ``n_smoke`` in a smoke run)."""

    tag: str  # each row's name starts with it
    job: str  # a job of peer_tasks
    n_full: int
    n_smoke: int
    rows: tuple[Row, ...]


def ours(handler: str, *options: str, name: str = "") -> Peer:
    """Our worker, ``python -m consumers worker`` with ``handler`` (of peer_tasks) and
    ``options``, else its defaults."""
    argv = [PYTHON, "-m", "consumers", "worker", "--queue", peer_tasks.QUEUE, "--name",
            WORKER_NAME, "--handler", f"{peer_tasks.__name__}:{handler}", "--log-level",
            "WARNING", *options]  # fmt: skip
    return Peer(name or f"redis-bus worker {' '.join(options)}".strip(), OURS_PACKAGE,
                bus_backlog_key(), enqueue_bus, lambda url: argv,
                lambda url: {"BUS_REDIS_URL": url})  # fmt: skip


def dramatiq(job: str, processes: int, threads: int, note: str = "") -> Peer:
    """``dramatiq --processes P --threads T``, its other options its defaults."""
    return Peer(f"Dramatiq --processes {processes} --threads {threads}{note}", "dramatiq",
                DRAMATIQ_BACKLOG, enqueue_dramatiq(job),
                lambda url: dramatiq_argv(processes, threads))  # fmt: skip


def celery(job: str, pool: str, concurrency: int) -> Peer:
    """``celery worker --pool P --concurrency C``, its other options its defaults."""
    return Peer(f"Celery --pool {pool} --concurrency {concurrency}", "celery", CELERY_BACKLOG,
                enqueue_celery(job), lambda url: celery_argv(pool, concurrency))  # fmt: skip


SLEEP, CPU, AWAIT = peer_tasks.SLEEP, peer_tasks.CPU, "await_20ms"
OURS_SLEEP = "redis-bus worker --concurrency 8"
OURS_AWAIT = "redis-bus worker --concurrency 100 (async def handler)"
OURS_CPU_1 = "redis-bus worker --processes 1 --concurrency 1"
OURS_CPU_2 = "redis-bus worker --processes 2 --concurrency 1"
IDEAL = "ideal (8 / 20 ms)"
IDEAL_AWAIT = "ideal (100 / 20 ms)"
RQ = "RQ SimpleWorker --burst (1 at a time)"
DRAMATIQ_CPU_1 = "Dramatiq --processes 1 --threads 1"
CELERY_CPU_1 = "Celery --pool prefork --concurrency 1"
TWO_CORES = "reference: what 2 cores give a peer"

WORKLOADS = (
    Workload("20 ms sleep x 8", SLEEP, 1_000, 40, (
        Row(None, name=IDEAL, ideal_jobs_s=8 / peer_tasks.SLEEP_S),
        Row(ours("bus_sleep_20ms", "--concurrency", "8"), ref=IDEAL,
            target=">= 0.9x the ideal", vs_best_peer=True,
            best_peer_target=">= 1.0x the best peer"),
        Row(dramatiq(SLEEP, 1, 8, " (its default threads)"), ref=OURS_SLEEP),
        Row(celery(SLEEP, "threads", 8), ref=OURS_SLEEP),
        Row(Peer(RQ, "rq", RQ_BACKLOG,
                 enqueue_rq(peer_tasks.sleep_20ms), rq_argv), ref=OURS_SLEEP),
    )),
    Workload("20 ms await x 100", AWAIT, 3_000, 300, (
        Row(None, name=IDEAL_AWAIT, ideal_jobs_s=100 / peer_tasks.SLEEP_S),
        Row(ours("bus_async_sleep_20ms", "--concurrency", "100", name=OURS_AWAIT),
            ref=IDEAL_AWAIT, target=">= 0.6x the ideal", vs_best_peer=True,
            best_peer_target=">= 1.0x the best peer"),
        Row(async_peers.ARQ, ref=OURS_AWAIT),
        Row(async_peers.SAQ, ref=OURS_AWAIT),
    )),
    Workload("5 ms CPU", CPU, 1_500, 60, (
        Row(ours("bus_cpu", "--processes", "1", "--concurrency", "1")),
        Row(ours("bus_cpu", "--processes", "2", "--concurrency", "1"), ref=OURS_CPU_1,
            target=">= 1.7x on 2 cores"),
        Row(dramatiq(CPU, 1, 1), ref=OURS_CPU_1),
        Row(dramatiq(CPU, 2, 1), ref=DRAMATIQ_CPU_1, target=TWO_CORES),
        Row(celery(CPU, "prefork", 1), ref=OURS_CPU_1),
        Row(celery(CPU, "prefork", 2), ref=CELERY_CPU_1, target=TWO_CORES),
    )),
)  # fmt: skip


def run(scale: Scale) -> list[Result]:
    """Every workload's rows, in order, on one private redis-server, one database per row."""
    versions = require({r.worker.package for w in WORKLOADS for r in w.rows
                        if r.worker is not None and _is_peer(r)} - ASYNC_PEERS)  # fmt: skip
    versions.update(async_peers.versions())  # builds their venv first, if it must
    loops = peer_tasks.calibrate(CPU_S)
    rows: list[Result] = []
    dbs = itertools.cycle(range(1, 16))
    with throwaway_server() as server:
        server.plain_client().flushall()
        for workload in WORKLOADS:
            n = scale.n(workload.n_full, workload.n_smoke)
            measured: list[tuple[Row, Result]] = []
            for row in workload.rows:
                name = f"{workload.tag}: {row.title}"
                ref = f"{workload.tag}: {row.ref}" if row.ref else None
                if row.worker is None:
                    rows.append(Result(SECTION, name, row.ideal_jobs_s, UNIT, ref=ref,
                                       target=row.target))  # fmt: skip
                    continue
                rate, extra = measure(server, next(dbs), row.worker, n, window_s=scale.s(60, 10),
                                      startup_s=scale.s(60, 20),
                                      env={peer_tasks.CPU_LOOPS_VAR: str(loops)})  # fmt: skip
                extra["version"] = versions.get(row.worker.package, "this checkout")
                if workload.job == CPU:
                    extra.update(cpu_loops=loops, cpu_s=CPU_S)
                measured.append((row, Result(SECTION, name, rate, UNIT, ref=ref,
                                             target=row.target, extra=extra)))  # fmt: skip
                rows.append(measured[-1][1])
            rows.extend(_vs_best_peer(measured))
    return rows + noop_drain.run(scale) + hung.run(scale)


def _vs_best_peer(measured: list[tuple[Row, Result]]) -> list[Result]:
    """For each row that asks for it, its rate over the best peer's of its workload."""
    peers = [r for row, r in measured if _is_peer(row)]
    if not peers:
        return []
    best = max(peers, key=lambda r: r.value)
    return [Result(SECTION, f"{result.name} / the best peer", result.value / best.value, "x",
                   target=row.best_peer_target, extra={"best_peer": best.name})
            for row, result in measured if row.vs_best_peer]  # fmt: skip


def _is_peer(row: Row) -> bool:
    return row.worker is not None and row.worker.package != OURS_PACKAGE
