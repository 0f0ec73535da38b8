"""A backlog of N jobs drained by a worker started after it, timed by a counter the jobs
``INCR`` (:mod:`loadtest.bench.peer_tasks`): how the peers and handlers sections time a worker.

The N jobs are enqueued *before* the worker starts (the enqueue is not timed, and a backlog that
appears all at once is what every worker gets). The bench polls the counter every 5 ms and the
rate is (jobs counted between the first poll that sees one done and the poll that sees N) / (the
time between those polls). That leaves out the interpreter start-up, the worker's imports and
connection set-up and its first job, which are not its draining rate.

A worker that has not finished after ``window_s`` from its first job done is measured over that
window instead: ``extra`` says ``capped`` and how many were done.

Every worker runs in its own session, its output kept in a log shown if it fails, with no
``BUS_*``, ``dramatiq_*``, ``RQ_*`` or ``CELERY_*`` variable of ours: each runs with its defaults
and the command line it is given.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from loadtest.bench import peer_tasks
from loadtest.bench.common import POLL_S, ROOT, clean_env
from loadtest.harness.procs import stop
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer
from producer.store import keys

# Settings the peers read from the environment (dramatiq_queue_prefetch, RQ_WORKER_CLASS,
# CELERY_...): none reaches their workers, which run with their defaults and our command lines.
PEER_ENV = ("dramatiq_", "RQ_", "CELERY_")

Enqueue = Callable[[RedisServer, int, int], None]  # (server, db, n)


@dataclass(frozen=True)
class Peer:
    """One worker's row: how to fill its queue and how to start it."""

    name: str
    package: str
    backlog_key: str  # the Redis list (or sorted set) its jobs wait in, to check the enqueue
    enqueue: Enqueue
    argv: Callable[[str], list[str]]  # url -> the worker's command line
    env: Callable[[str], dict[str, str]] = field(default=lambda url: {})  # url -> its settings


def enqueue_bus(server: RedisServer, db: int, n: int) -> None:
    """N messages on our queue, pushed as users push them (the handler is the worker's)."""
    with Producer(server.plain_client(db), src="bench") as producer:
        for start in range(0, n, 1000):
            producer.push_many([{"i": i} for i in range(start, min(n, start + 1000))],
                               peer_tasks.QUEUE)  # fmt: skip


def enqueue_rq(func: Callable[[], None]) -> Enqueue:
    """N RQ jobs calling ``func`` (named by its import path)."""

    def enqueue(server: RedisServer, db: int, n: int) -> None:
        from rq import Queue

        queue = Queue(peer_tasks.QUEUE, connection=server.plain_client(db))
        path = f"{func.__module__}.{func.__name__}"
        for start in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data(path) for _ in range(min(1000, n - start))])

    return enqueue


def enqueue_dramatiq(job: str) -> Enqueue:
    """N messages for Dramatiq's actor ``job``."""

    def enqueue(server: RedisServer, db: int, n: int) -> None:
        broker = peer_tasks.dramatiq_setup(server.db_url(db))
        try:
            actor = broker.get_actor(job)
            for _ in range(n):
                actor.send()
        finally:
            broker.close()

    return enqueue


def enqueue_celery(job: str) -> Enqueue:
    """N calls of Celery's task for ``job``."""

    def enqueue(server: RedisServer, db: int, n: int) -> None:
        app = peer_tasks.celery_app_for(server.db_url(db))
        task = app.tasks[peer_tasks.celery_task(job)]
        try:
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    task.apply_async(producer=producer)
        finally:
            app.close()

    return enqueue


def bus_backlog_key() -> str:
    return keys.pending(peer_tasks.QUEUE)


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A worker in its own session, its output in a log shown if it fails; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        log = Path(tmp) / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        try:
            yield proc, log
        finally:
            stop(proc)


def check_alive(proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Raise with the tail of its log if ``proc`` has exited."""
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")


def shown(argv: list[str]) -> str:
    """The command line as a user types it."""
    return " ".join(["python", *argv[1:]])


def _count(client: redis.Redis) -> int:
    return int(client.get(peer_tasks.COUNTER) or 0)


def measure(server: RedisServer, db: int, peer: Peer, n: int, *, window_s: float,
            startup_s: float, env: dict[str, str] | None = None,
            ) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """Database ``db`` flushed, N jobs enqueued, ``peer``'s worker started (with ``env`` added
    to its environment): its rate in jobs/s, and the details for a row's ``extra``."""
    client = server.plain_client(db)
    client.flushdb()
    started = time.perf_counter()
    peer.enqueue(server, db, n)
    enqueue_s = time.perf_counter() - started
    queued = int(client.zcard(peer.backlog_key) if client.type(peer.backlog_key) == b"zset"
                 else client.llen(peer.backlog_key))  # arq's queue is a sorted set  # fmt: skip
    if queued != n:
        raise RuntimeError(f"{peer.name}: {queued} jobs in {peer.backlog_key} after enqueueing {n}")
    url = server.db_url(db)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    given = {peer_tasks.URL_VAR: url, "PYTHONPATH": path, **(env or {}), **peer.env(url)}
    child_env = {k: v for k, v in clean_env(**given).items() if not k.startswith(PEER_ENV)}
    argv = peer.argv(url)
    with running(argv, child_env) as (proc, log):
        launched = time.perf_counter()

        def first_done() -> bool:
            if _count(client):
                return True
            check_alive(proc, log, peer.name)
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
                    check_alive(proc, log, peer.name)
                break
            time.sleep(POLL_S)
    capped = count < n
    rate = (count - first_count) / (now - first_t) if now > first_t else 0.0
    return rate, {
        "jobs": n, "done_in_window": count - first_count, "window_s": round(now - first_t, 3),
        "capped": capped, "enqueue_s": round(enqueue_s, 3),
        "start_to_first_done_s": round(first_t - launched, 3), "worker": shown(argv),
        "timed": "first job done to last (or to the end of the window when capped), "
        "counter polled every 5 ms",
    }  # fmt: skip
