"""Locust users for redis-bus, its naive baseline, and Redis itself.

Against ``make run`` (web on 127.0.0.1:8000, Redis on 127.0.0.1:6399, a user per role: the
direct users need a login, ``--redis-url`` or ``$BUS_REDIS_URL``, e.g. make run's admin)::

    set -a; . .run/env/admin.env; set +a
    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000        # web UI
    .venv/bin/locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 50 -r 10 -t 30s [BusProdcons BusPubsub ...] [--tags seed]
    .venv/bin/locust -f loadtest/locustfile.py,loadtest/shapes/bursts.py ... --burst 3 --idle 5

Users (pick them by class name, or by tag: ``prodcons``, ``pubsub``, ``seed``):

``BusProdcons`` / ``BusPubsub``      POST ``{"payload", "queue"|"channel"}`` to the bus (202).
``SeedGet``                          the seed articles' ``GET /prodcons`` and ``GET /pubsub`` (303).
``RedisPush`` / ``RedisPublish``     the project's Producer straight to Redis, reported to locust
                                     as ``LPUSH`` / ``PUBLISH``: Redis's own cost beside the web's.
``BaselineProdcons`` / ``BaselinePubsub``  the naive app (:mod:`loadtest.baseline`) at
                                     ``--baseline-host``; they exist only when
                                     ``LOADTEST_BASELINE_HOST`` is set.

Shapes (``loadtest/shapes``: ``steady``, ``step``, ``bursts``) are added with ``-f``; a directory
needs ``--class-picker`` to choose one. Options: ``--rate``, ``--payload-bytes``, ``--queue``,
``--channel``, ``--redis-url``, ``--baseline-host``, ``--bus-stats-interval``, ``--record``,
``--hang-share`` and ``--die-share`` (the share of ``BusProdcons`` messages marked to hang their
handler or end its process: see :mod:`loadtest.ledger.handlers`), and the shapes'
``--step-users``, ``--step-s``, ``--burst``, ``--idle`` (locust's --help cannot list a locustfile's
options; the web UI shows them with their help).

Every sending user sends ``--rate`` messages a second. With ``LOADTEST_RECORD`` (or
``--record``) naming a file, every attempt becomes a ``sent`` line of the ledger
(:mod:`loadtest.ledger.records`), and the test's start and stop ``phase`` lines. While the test
runs, the master (or the local runner) polls the bus's ``/api/stats`` every
``--bus-stats-interval`` seconds and shows its delivery figures (:mod:`loadtest.users.busfigures`)
in the log, at the end of the summary and in a "redis-bus" tab of the web UI.

The users live in :mod:`loadtest.users` (:mod:`~loadtest.users.http`,
:mod:`~loadtest.users.direct`), their options in :mod:`~loadtest.users.base`, the event hooks in
:mod:`~loadtest.users.hooks`; this file names them for ``locust -f``.
"""

from __future__ import annotations

from loadtest.users import hooks
from loadtest.users.direct import RedisPublish, RedisPush
from loadtest.users.http import BaselineProdcons, BaselinePubsub, BusProdcons, BusPubsub, SeedGet

__all__ = [
    "BaselineProdcons",
    "BaselinePubsub",
    "BusProdcons",
    "BusPubsub",
    "RedisPublish",
    "RedisPush",
    "SeedGet",
    "hooks",
]
