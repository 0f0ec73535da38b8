"""arq's and SAQ's side of the handlers section's ``async def`` workload: their tasks, their
worker settings, and the enqueue, all run with the Python of their own venv
(:mod:`loadtest.bench.async_peers`), since arq pins redis-py below 6 and the project needs 8.

Each task awaits 20 ms and counts itself with :func:`loadtest.bench.peer_tasks.sleep_20ms_async`
(one ``INCR`` on the database in ``PEER_REDIS_URL``), as our worker's ``async def`` handler does.
The workers are started as their users start them, on settings named by import path:

- arq: ``arq loadtest.bench.async_tasks.ArqSettings`` (``max_jobs = 100``, its other settings
  its defaults);
- SAQ: ``saq loadtest.bench.async_tasks.saq_settings`` (``concurrency = 100``, the same).

Both settings are built on first access (a module ``__getattr__``), so importing this module
needs neither the variable nor the peers. ``python -m loadtest.bench.async_tasks enqueue
arq|saq N`` enqueues N jobs as their users do (``enqueue_job``, ``Queue.enqueue``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from loadtest.bench import peer_tasks

CONCURRENCY = 100
ARQ_BACKLOG = "arq:queue"  # a sorted set of job ids
SAQ_BACKLOG = f"saq:{peer_tasks.QUEUE}:queued"  # a list of job ids


async def arq_sleep_20ms(ctx: dict[str, Any]) -> None:
    """arq's task: await 20 ms, count it."""
    await peer_tasks.sleep_20ms_async()


async def saq_sleep_20ms(ctx: dict[str, Any]) -> None:
    """SAQ's task: await 20 ms, count it."""
    await peer_tasks.sleep_20ms_async()


def _arq_settings() -> Any:
    from arq.connections import RedisSettings

    class ArqSettings:
        functions = [arq_sleep_20ms]
        redis_settings = RedisSettings.from_dsn(peer_tasks._url())
        max_jobs = CONCURRENCY

    return ArqSettings


def _saq_queue() -> Any:
    from saq import Queue

    return Queue.from_url(peer_tasks._url(), name=peer_tasks.QUEUE)


def _saq_settings() -> dict[str, Any]:
    return {"queue": _saq_queue(), "functions": [saq_sleep_20ms], "concurrency": CONCURRENCY}


_built: dict[str, Any] = {}
_BUILDERS = {"ArqSettings": _arq_settings, "saq_settings": _saq_settings}


def __getattr__(name: str) -> Any:
    """``ArqSettings`` and ``saq_settings``, built once from ``PEER_REDIS_URL``."""
    if name in _BUILDERS:
        if name not in _built:
            _built[name] = _BUILDERS[name]()
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def enqueue(peer: str, n: int) -> None:
    """N jobs for ``peer`` (arq or saq), one call each, as its users enqueue them."""
    if peer == "arq":
        from arq import create_pool

        pool = await create_pool(_arq_settings().redis_settings)
        try:
            for _ in range(n):
                await pool.enqueue_job(arq_sleep_20ms.__name__)
        finally:
            await pool.aclose()
    elif peer == "saq":
        queue = _saq_queue()
        try:
            for _ in range(n):
                await queue.enqueue(saq_sleep_20ms.__name__)
        finally:
            await queue.disconnect()
    else:
        raise SystemExit(f"unknown peer {peer!r}: arq or saq")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "enqueue":
        raise SystemExit("usage: python -m loadtest.bench.async_tasks enqueue arq|saq N")
    asyncio.run(enqueue(sys.argv[2], int(sys.argv[3])))
