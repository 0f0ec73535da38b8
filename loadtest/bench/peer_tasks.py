"""The no-op jobs of the peers section (:mod:`loadtest.bench.peers`), one per peer.

Each job does nothing but ``INCR`` one counter in the Redis database its worker consumes from,
so the bench counts exactly how many are done without relying on a peer's own bookkeeping. The
workers import this module as users import their tasks (``PYTHONPATH`` = the checkout) and find
their database in ``PEER_REDIS_URL``:

- RQ: ``rq worker ... bench`` runs :func:`rq_noop` (jobs name it by its import path);
- Dramatiq: ``dramatiq loadtest.bench.peer_tasks:dramatiq_setup`` calls :func:`dramatiq_setup`,
  which sets a Redis broker and declares the ``noop`` actor on it;
- Celery: ``celery -A loadtest.bench.peer_tasks:celery_app worker`` finds the app, built on first
  access (a module ``__getattr__``), with its ``peers.noop`` task.

Nothing here imports a peer at module level: a missing peer fails only where it is used.
"""

from __future__ import annotations

import os
from typing import Any

import redis

URL_VAR = "PEER_REDIS_URL"
COUNTER = "bench:peers:done"
QUEUE = "bench"
CELERY_TASK = "peers.noop"

_counter: redis.Redis | None = None


def _url() -> str:
    url = os.environ.get(URL_VAR)
    if not url:
        raise RuntimeError(f"{URL_VAR} is not set: the peers bench sets it for its workers")
    return url


def _done() -> None:
    """Count one job done (one round trip; redis-py's pool is thread-safe and fork-aware)."""
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(_url())
    _counter.incr(COUNTER)


def rq_noop() -> None:
    """RQ's job."""
    _done()


def dramatiq_setup(url: str | None = None) -> Any:
    """Set Dramatiq's global broker to Redis at ``url`` (default: ``PEER_REDIS_URL``) and declare
    the no-op actor on it; return the actor (the bench sends with it, the CLI ignores it)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url or _url())
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="noop", queue_name=QUEUE, broker=broker)
    def noop() -> None:
        _done()

    return noop


def celery_app_for(url: str) -> Any:
    """A Celery app on Redis at ``url`` (no result backend) with the no-op task."""
    from celery import Celery

    app = Celery("peers", broker=url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)

    @app.task(name=CELERY_TASK)
    def noop() -> None:
        _done()

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
