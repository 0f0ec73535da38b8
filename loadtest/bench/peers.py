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

How the peers are timed. The N jobs are enqueued *before* the worker starts (the enqueue is not
timed, and a backlog that appears all at once is what ours gets too). Each job's only work is
``INCR`` of a counter in its database (:mod:`loadtest.bench.peer_tasks`), so the count is exact
whatever the peer keeps about its jobs. The bench polls that counter every 5 ms and the rate is
(jobs counted between the first poll that sees one done and the poll that sees N) / (the time
between those polls). That leaves out the interpreter start-up, the peer's imports and
connection set-up and its first job, which are not its draining rate. The ``INCR`` costs each
peer one loopback round trip per job that our worker does not pay (it counts in its stats hash,
once per batch): about 0.05 ms beside the peers' 0.5 to 4 ms per job.

A peer that has not finished after ``window_s`` (60 s; 10 s in a smoke run) from its first job
done is measured over that window instead: the row's ``extra`` says ``capped`` and how many were
done.

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

import contextlib
import importlib.metadata
import importlib.util
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from loadtest.bench import peer_tasks
from loadtest.bench.common import POLL_S, PYTHON, ROOT, Result, Scale, clean_env
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer, throwaway_server
from loadtest.harness.waits import wait_for
from producer.store import envelope, keys

SECTION = "peers"
OURS = "redis-bus worker (at-least-once, batch 100)"
WORKER_NAME = "bench-peers"
# Settings the peers read from the environment (dramatiq_queue_prefetch, RQ_WORKER_CLASS,
# CELERY_...): none reaches their workers, which run with their defaults and our command lines.
PEER_ENV = ("dramatiq_", "RQ_", "CELERY_")
INSTALL = ".venv/bin/pip install -e '.[bench]' (make bootstrap installs it)"


@dataclass(frozen=True)
class Peer:
    """One peer's row: how to fill its queue and how to start its worker."""

    name: str
    package: str
    backlog_key: str  # the Redis list its jobs wait in, to check the enqueue
    enqueue: Callable[[RedisServer, int, int], None]  # (server, db, n)
    argv: Callable[[str], list[str]]  # url -> the worker's command line


def _enqueue_rq(server: RedisServer, db: int, n: int) -> None:
    from rq import Queue

    queue = Queue(peer_tasks.QUEUE, connection=server.plain_client(db))
    func = f"{peer_tasks.__name__}.rq_noop"
    for start in range(0, n, 1000):
        queue.enqueue_many([Queue.prepare_data(func) for _ in range(min(1000, n - start))])


def _enqueue_dramatiq(server: RedisServer, db: int, n: int) -> None:
    actor = peer_tasks.dramatiq_setup(server.db_url(db))
    try:
        for _ in range(n):
            actor.send()
    finally:
        actor.broker.close()


def _enqueue_celery(server: RedisServer, db: int, n: int) -> None:
    app = peer_tasks.celery_app_for(server.db_url(db))
    task = app.tasks[peer_tasks.CELERY_TASK]
    try:
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                task.apply_async(producer=producer)
    finally:
        app.close()


def _dramatiq_argv(threads: int) -> Callable[[str], list[str]]:
    def argv(url: str) -> list[str]:
        return [PYTHON, "-m", "dramatiq", f"{peer_tasks.__name__}:dramatiq_setup", "--processes",
                "1", "--threads", str(threads), "--queues", peer_tasks.QUEUE]  # fmt: skip

    return argv


PEERS = (
    Peer("RQ SimpleWorker (burst)", "rq", f"rq:queue:{peer_tasks.QUEUE}", _enqueue_rq,
         lambda url: [PYTHON, "-m", "rq.cli", "worker", "--burst", "--worker-class",
                      "rq.worker.SimpleWorker", "--url", url, "--logging_level", "WARNING",
                      peer_tasks.QUEUE]),
    Peer("Dramatiq, 1 process x 8 threads (its default)", "dramatiq",
         f"dramatiq:{peer_tasks.QUEUE}", _enqueue_dramatiq, _dramatiq_argv(8)),
    Peer("Dramatiq, 1 process x 1 thread", "dramatiq", f"dramatiq:{peer_tasks.QUEUE}",
         _enqueue_dramatiq, _dramatiq_argv(1)),
    Peer("Celery worker, solo pool", "celery", peer_tasks.QUEUE, _enqueue_celery,
         lambda url: [PYTHON, "-m", "celery", "-A", f"{peer_tasks.__name__}:celery_app",
                      "worker", "--pool", "solo", "--concurrency", "1", "--loglevel", "WARNING",
                      "--without-mingle", "--without-gossip", "--queues", peer_tasks.QUEUE]),
)  # fmt: skip


def require() -> dict[str, str]:
    """Each peer package's version; a clear error naming those that are missing."""
    packages = sorted({p.package for p in PEERS})
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise RuntimeError(f"peers: {', '.join(missing)} not installed (the optional 'bench' "
                           f"extra); install it: {INSTALL}")  # fmt: skip
    return {p: importlib.metadata.version(p) for p in packages}


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


@contextlib.contextmanager
def _worker(argv: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A worker in its own session, its output in a log shown if it fails; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        log = Path(tmp) / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        try:
            yield proc, log
        finally:
            stop(proc)


def _alive(proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")


def _shown(argv: list[str]) -> str:
    return " ".join(["python", *argv[1:]])


def _count(client: redis.Redis) -> int:
    return int(client.get(peer_tasks.COUNTER) or 0)


def _peer(server: RedisServer, db: int, peer: Peer, n: int, window_s: float,
          startup_s: float) -> Result:  # fmt: skip
    client = server.plain_client(db)
    client.flushdb()
    started = time.perf_counter()
    peer.enqueue(server, db, n)
    enqueue_s = time.perf_counter() - started
    queued = int(client.llen(peer.backlog_key))
    if queued != n:
        raise RuntimeError(f"{peer.name}: {queued} jobs in {peer.backlog_key} after enqueueing {n}")
    url = server.db_url(db)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in clean_env(**{peer_tasks.URL_VAR: url}, PYTHONPATH=path).items()
           if not k.startswith(PEER_ENV)}  # fmt: skip
    argv = peer.argv(url)
    with _worker(argv, env) as (proc, log):
        launched = time.perf_counter()

        def first_done() -> bool:
            if _count(client):
                return True
            _alive(proc, log, peer.name)
            return False

        wait_for(first_done, startup_s, f"{peer.name}'s first job", POLL_S)
        first_count, first_t = _count(client), time.perf_counter()
        while True:
            count, now = _count(client), time.perf_counter()
            if count >= n or now - first_t >= window_s:
                break
            if proc.poll() is not None:  # RQ's burst worker exits when the queue is empty
                count, now = _count(client), time.perf_counter()
                if count < n:
                    _alive(proc, log, peer.name)
                break
            time.sleep(POLL_S)
    capped = count < n
    rate = (count - first_count) / (now - first_t) if now > first_t else 0.0
    return Result(SECTION, peer.name, rate, "msg/s", ref=OURS, extra={
        "jobs": n, "done_in_window": count - first_count, "window_s": round(now - first_t, 3),
        "capped": capped, "enqueue_s": round(enqueue_s, 3),
        "start_to_first_done_s": round(first_t - launched, 3), "worker": _shown(argv),
        "timed": "first job done to last (or to the end of the window when capped), "
        "counter polled every 5 ms",
    })  # fmt: skip


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
    with _worker(argv, env) as (proc, log):

        def registered() -> bool:
            if client.zscore(keys.consumers(queue), WORKER_NAME) is not None:
                return True
            _alive(proc, log, "our worker")
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
                _alive(proc, log, "our worker")
                return False

            wait_for(drained, 120, "our worker's drain", POLL_S)
            elapsed.append(time.perf_counter() - started)
    rates = [n / s for s in elapsed]
    return Result(SECTION, OURS, statistics.median(rates), "msg/s", extra={
        "jobs": n, "rounds_msg_per_s": [round(r) for r in rates], "worker": _shown(argv),
        "timed": "backlog appears (one MULTI) to stats handled = N (stats every 20 ms); "
        "median of the rounds",
    })  # fmt: skip
