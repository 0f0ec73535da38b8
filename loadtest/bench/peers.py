"""Peers: RQ, Dramatiq and Celery draining the same number of no-op jobs as our worker.

One private redis-server, one database per row (flushed before it), one worker process per row,
started as its users start it, its output discarded except on failure:

- redis-bus: ``python -m consumers worker`` (at-least-once, batch 100, no-op handler), the
  reference row;
- RQ: ``rq worker --burst --worker-class rq.worker.SimpleWorker`` (jobs run in the worker
  process; the default ``Worker`` forks once per job);
- Dramatiq: ``dramatiq --processes 1 --threads 8`` (its default thread count), and again with
  ``--threads 1``;
- Celery: ``celery worker --pool solo`` (``--without-mingle --without-gossip``: start-up only).

Every worker logs at WARNING, ours included, so no row formats a line per job.

How the peers are timed: as :mod:`loadtest.bench.backlog` says (N jobs enqueued before the
worker starts, counted by a counter each job ``INCR``s, from the first job done to the last).
Each job's only work is that ``INCR`` (:mod:`loadtest.bench.peer_tasks`), so the count is exact
whatever the peer keeps about its jobs. It costs each peer one loopback round trip per job that
our worker does not pay (it counts in its stats hash, once per batch): about 0.05 ms beside the
peers' 0.5 to 4 ms per job. A peer is measured over at most ``window_s`` (60 s; 10 s in a smoke
run) from its first job done.

How ours is timed, as :mod:`loadtest.bench.drain` does: the worker is started and waits, registered
and idle; the N envelopes appear in its list in one MULTI; the clock runs until its stats hash
counts N handled. Its stats are written every 20 ms, so this includes its first message and up
to 20 ms of lateness, which only lowers our figure. The same worker drains N three times (once
in a smoke run) and the row is the median; every round is in ``extra``.

Reading the rows: Dramatiq's consumer thread fetches at most 2 messages per worker thread
ahead and sleeps (5 ms and up) whenever that many are outstanding, so with one thread it mostly
waits; its ``dramatiq_queue_prefetch`` setting would lift that row several times, but every peer
runs with its defaults here (``dramatiq_*``, ``RQ_*`` and ``CELERY_*`` variables are not passed
to the workers).

The peers come from the optional ``bench`` extra (``pip install -e '.[bench]'``, which ``make
bootstrap`` does); a missing one stops the section with its name. The ratio column is
peer / ours.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import statistics
import time

from loadtest.bench import peer_tasks
from loadtest.bench.backlog import (
    Peer,
    check_alive,
    enqueue_celery,
    enqueue_dramatiq,
    enqueue_rq,
    measure,
    running,
    shown,
)
from loadtest.bench.common import POLL_S, PYTHON, Result, Scale, clean_env
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer.store import envelope, keys

SECTION = "peers"
OURS = "redis-bus worker (at-least-once, batch 100)"
WORKER_NAME = "bench-peers"
INSTALL = ".venv/bin/pip install -e '.[bench]' (make bootstrap installs it)"


def dramatiq_argv(processes: int, threads: int) -> list[str]:
    """``dramatiq`` as its users start it, on the bench's queue."""
    return [PYTHON, "-m", "dramatiq", f"{peer_tasks.__name__}:dramatiq_setup", "--processes",
            str(processes), "--threads", str(threads), "--queues", peer_tasks.QUEUE]  # fmt: skip


def celery_argv(pool: str, concurrency: int) -> list[str]:
    """``celery worker`` as its users start it, on the bench's queue."""
    return [PYTHON, "-m", "celery", "-A", f"{peer_tasks.__name__}:celery_app", "worker",
            "--pool", pool, "--concurrency", str(concurrency), "--loglevel", "WARNING",
            "--without-mingle", "--without-gossip", "--queues", peer_tasks.QUEUE]  # fmt: skip


def rq_argv(url: str) -> list[str]:
    """``rq worker --burst`` with the in-process SimpleWorker, on the bench's queue."""
    return [PYTHON, "-m", "rq.cli", "worker", "--burst", "--worker-class",
            "rq.worker.SimpleWorker", "--url", url, "--logging_level", "WARNING",
            peer_tasks.QUEUE]  # fmt: skip


RQ_BACKLOG = f"rq:queue:{peer_tasks.QUEUE}"
DRAMATIQ_BACKLOG = f"dramatiq:{peer_tasks.QUEUE}"
CELERY_BACKLOG = peer_tasks.QUEUE

PEERS = (
    Peer("RQ SimpleWorker (burst)", "rq", RQ_BACKLOG, enqueue_rq(peer_tasks.noop), rq_argv),
    Peer("Dramatiq, 1 process x 8 threads (its default)", "dramatiq", DRAMATIQ_BACKLOG,
         enqueue_dramatiq(peer_tasks.NOOP), lambda url: dramatiq_argv(1, 8)),
    Peer("Dramatiq, 1 process x 1 thread", "dramatiq", DRAMATIQ_BACKLOG,
         enqueue_dramatiq(peer_tasks.NOOP), lambda url: dramatiq_argv(1, 1)),
    Peer("Celery worker, solo pool", "celery", CELERY_BACKLOG, enqueue_celery(peer_tasks.NOOP),
         lambda url: celery_argv("solo", 1)),
)  # fmt: skip


def require(packages: set[str] | None = None) -> dict[str, str]:
    """Each peer package's version; a clear error naming those that are missing."""
    wanted = sorted(packages if packages is not None else {p.package for p in PEERS})
    missing = [p for p in wanted if importlib.util.find_spec(p) is None]
    if missing:
        raise RuntimeError(f"bench: {', '.join(missing)} not installed (the optional 'bench' "
                           f"extra); install it: {INSTALL}")  # fmt: skip
    return {p: importlib.metadata.version(p) for p in wanted}


def run(scale: Scale) -> list[Result]:
    """Our worker, then each peer, draining the same N no-op jobs; one row each."""
    versions = require()
    n = scale.n(20_000, 200)
    window_s = scale.s(60, 10)
    rows: list[Result] = []
    with throwaway_server() as server:
        server.plain_client().flushall()
        rows.append(_ours(server, 1, n, rounds=scale.n(3, 1)))
        for db, peer in enumerate(PEERS, start=2):
            row = _peer(server, db, peer, n, window_s, startup_s=scale.s(60, 20))
            row.extra["version"] = versions[peer.package]
            rows.append(row)
    return rows


def _peer(server: RedisServer, db: int, peer: Peer, n: int, window_s: float,
          startup_s: float) -> Result:  # fmt: skip
    rate, extra = measure(server, db, peer, n, window_s=window_s, startup_s=startup_s)
    return Result(SECTION, peer.name, rate, "msg/s", ref=OURS, extra=extra)


def _ours(server: RedisServer, db: int, n: int, rounds: int) -> Result:
    client = server.plain_client(db)
    client.flushdb()
    queue = peer_tasks.QUEUE
    env = clean_env(BUS_REDIS_URL=server.db_url(db), BUS_QUEUES=queue, BUS_BATCH_SIZE="100",
                    BUS_STATS_INTERVAL_S="0.02")  # fmt: skip
    argv = [PYTHON, "-m", "consumers", "worker", "--queue", queue, "--name", WORKER_NAME,
            "--delivery", "at-least-once", "--handler", "consumers.handlers:noop",
            "--log-level", "WARNING"]  # fmt: skip
    raws = [envelope.new(i, src="bench", seq=i + 1, mode="prodcons").encode() for i in range(n)]
    stats = keys.stats("worker", f"{queue}:{WORKER_NAME}")
    elapsed: list[float] = []
    with running(argv, env) as (proc, log):

        def registered() -> bool:
            if client.zscore(keys.consumers(queue), WORKER_NAME) is not None:
                return True
            check_alive(proc, log, "our worker")
            return False

        wait_for(registered, 30, "our worker to register", POLL_S)
        for r in range(rounds):
            pipe = client.pipeline(transaction=True)  # the worker sees all of it at once
            for start in range(0, n, 10_000):
                pipe.lpush(keys.pending(queue), *raws[start : start + 10_000])
            started = time.perf_counter()
            pipe.execute()
            target = n * (r + 1)

            def drained(target: int = target) -> bool:
                if int(client.hget(stats, "handled") or 0) >= target:
                    return True
                check_alive(proc, log, "our worker")
                return False

            wait_for(drained, 120, "our worker's drain", POLL_S)
            elapsed.append(time.perf_counter() - started)
    rates = [n / s for s in elapsed]
    return Result(SECTION, OURS, statistics.median(rates), "msg/s", extra={
        "jobs": n, "rounds_msg_per_s": [round(r) for r in rates], "worker": shown(argv),
        "timed": "backlog appears (one MULTI) to stats handled = N (stats every 20 ms); "
        "median of the rounds",
    })  # fmt: skip
