"""The jobs of the peers and handlers sections (:mod:`loadtest.bench.peers`,
:mod:`loadtest.bench.handlers`), the same body for every worker.

Each job (:data:`JOBS`) does its work (nothing, a 20 ms sleep, or ~5 ms of pure-Python work) and
then ``INCR``s one counter in the Redis database its worker consumes from, so the bench counts
exactly how many are done without relying on a worker's own bookkeeping. The workers import
this module as users import their tasks (``PYTHONPATH`` = the checkout) and find their database
in ``PEER_REDIS_URL`` (and the CPU job its loop count in ``PEER_CPU_LOOPS``, calibrated once by
the bench):

- redis-bus: ``python -m consumers worker --handler loadtest.bench.peer_tasks:bus_sleep_20ms``
  (or ``bus_cpu``, ``bus_async_sleep_20ms``, ``bus_hang_or_sleep``), handlers with the worker's
  contract (``def handle(env) -> None``, or ``async def``);
- arq and SAQ: their tasks are in :mod:`loadtest.bench.async_tasks` (they await
  :func:`sleep_20ms_async`), run from a venv of their own;
- RQ: ``rq worker ... bench`` runs :func:`noop` or :func:`sleep_20ms` (jobs name them by their
  import path);
- Dramatiq: ``dramatiq loadtest.bench.peer_tasks:dramatiq_setup`` calls :func:`dramatiq_setup`,
  which sets a Redis broker and declares one actor per job on it;
- Celery: ``celery -A loadtest.bench.peer_tasks:celery_app worker`` finds the app, built on first
  access (a module ``__getattr__``), with one ``peers.<job>`` task per job.

Nothing here imports a peer at module level: a missing peer fails only where it is used.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

if TYPE_CHECKING:  # at run time this module needs only redis-py: arq's and SAQ's venv loads it
    from producer import Envelope

URL_VAR = "PEER_REDIS_URL"
CPU_LOOPS_VAR = "PEER_CPU_LOOPS"
COUNTER = "bench:peers:done"
QUEUE = "bench"
SLEEP_S = 0.02
NOOP, SLEEP, CPU = "noop", "sleep_20ms", "cpu"

HANG = "hang"  # the payload that makes bus_hang_or_sleep hang

_counter: redis.Redis | None = None
_async_counter: redis.asyncio.Redis | None = None


def _url() -> str:
    url = os.environ.get(URL_VAR)
    if not url:
        raise RuntimeError(f"{URL_VAR} is not set: the bench sets it for its workers")
    return url


def _done() -> None:
    """Count one job done (one round trip; redis-py's pool is thread-safe and fork-aware)."""
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(_url())
    _counter.incr(COUNTER)


async def done_async() -> None:
    """Count one job done from a coroutine (one awaited round trip; the client is made on the
    worker's event loop, which runs for the whole process)."""
    global _async_counter
    if _async_counter is None:
        _async_counter = redis.asyncio.Redis.from_url(_url())
    await _async_counter.incr(COUNTER)


async def sleep_20ms_async() -> None:
    """Await 20 ms (a call to a slow service), count it."""
    await asyncio.sleep(SLEEP_S)
    await done_async()


def burn(loops: int) -> int:
    """Pure-Python work that holds the GIL: ``loops`` rounds of integer arithmetic."""
    acc = 0
    for i in range(loops):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate(target_s: float = 0.005) -> int:
    """How many :func:`burn` loops take about ``target_s`` in this process (best of 5)."""
    probe = 20_000
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        burn(probe)
        best = min(best, time.perf_counter() - started)
    return max(1, round(probe * target_s / best))


def noop() -> None:
    """The no-op job (RQ's, Dramatiq's and Celery's): count it."""
    _done()


def sleep_20ms() -> None:
    """Sleep 20 ms (a call to a slow service), count it."""
    time.sleep(SLEEP_S)
    _done()


def cpu() -> None:
    """~5 ms of pure-Python work (``PEER_CPU_LOOPS`` loops, else calibrated here), count it."""
    burn(int(os.environ.get(CPU_LOOPS_VAR) or calibrate()))
    _done()


JOBS: dict[str, Callable[[], None]] = {NOOP: noop, SLEEP: sleep_20ms, CPU: cpu}


def bus_sleep_20ms(env: Envelope) -> None:
    """Our worker's handler for the 20 ms job (``def handle(env) -> None``)."""
    sleep_20ms()


def bus_cpu(env: Envelope) -> None:
    """Our worker's handler for the CPU job."""
    cpu()


async def bus_async_sleep_20ms(env: Envelope) -> None:
    """Our worker's ``async def`` handler for the 20 ms job (awaited on its event loop)."""
    await sleep_20ms_async()


def bus_hang_or_sleep(env: Envelope) -> None:
    """Hang for an hour on the payload ``"hang"`` (a handler stuck on a dead socket), else the
    20 ms job."""
    if env.payload == HANG:
        time.sleep(3600)
    sleep_20ms()


def dramatiq_setup(url: str | None = None) -> Any:
    """Set Dramatiq's global broker to Redis at ``url`` (default: ``PEER_REDIS_URL``) and declare
    one actor per job on it (named after the job); return the broker (the bench sends with it,
    the CLI ignores it)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url or _url())
    dramatiq.set_broker(broker)
    for job, func in JOBS.items():
        dramatiq.actor(actor_name=job, queue_name=QUEUE, broker=broker)(func)
    return broker


def celery_task(job: str) -> str:
    """The Celery task name of ``job``."""
    return f"peers.{job}"


def celery_app_for(url: str) -> Any:
    """A Celery app on Redis at ``url`` (no result backend) with one task per job."""
    from celery import Celery

    app = Celery("peers", broker=url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
    for job, func in JOBS.items():
        app.task(name=celery_task(job), shared=False)(func)
    return app


_celery_app: Any = None


def __getattr__(name: str) -> Any:
    """``celery_app``, for ``celery -A loadtest.bench.peer_tasks:celery_app``: built on first use
    from ``PEER_REDIS_URL``, so importing this module needs neither Celery nor the variable."""
    global _celery_app
    if name == "celery_app":
        if _celery_app is None:
            _celery_app = celery_app_for(_url())
        return _celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
