"""What the load generator keeps per process and writes per message, without locust.

:class:`Generator` holds the process's ledger, its load-test ids, the fates it marks messages
with (``--hang-share``, ``--die-share``) and the direct users' one
:class:`~producer.Producer`; :func:`sent_line` is a ``sent`` ledger line with every documented
field; :func:`bus_outcome` and :func:`baseline_outcome` are the outcome rules for an HTTP
answer (see :mod:`loadtest.ledger.records`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import redis

from loadtest.ledger import records
from producer import Producer, Settings, make_client
from producer.observe.stats import Flusher, Stats
from producer.producer import new_src

log = logging.getLogger(__name__)

Fields = dict[str, Any]


class Generator:
    """One load-generating process: ledger, load-test ids, the direct Producer."""

    def __init__(self) -> None:
        self.ledger: records.Ledger | None = None
        self.lids = records.Lids()
        self.fates = records.Fates()  # its shares are set by the users from their options
        self._producer: Producer | None = None
        self._stats: Stats | None = None
        self._settings: Settings | None = None

    def open_ledger(self, path: str | None) -> None:
        """The ledger at ``path``, else the one named by ``LOADTEST_RECORD``, else none."""
        self.ledger = records.Ledger(path) if path else records.Ledger.from_env()

    def record(self, **fields: Any) -> None:
        """Append one ledger line if there is a ledger."""
        if self.ledger:
            self.ledger.write(**fields)

    def close(self) -> None:
        """Close the ledger (nothing is written after this)."""
        if self.ledger:
            self.ledger.close()
            self.ledger = None

    def producer(self, redis_url: str) -> Producer:
        """The process's one Producer, built on first use (so after gevent patched the
        process). Its counters go to the bus's stats as role ``locust``, so ``/api/stats``
        counts what it pushes and publishes beside the web's."""
        if self._producer is None:
            settings = Settings.from_env(os.environ, redis_url=redis_url)  # BUS_* apply too
            src = new_src()
            self._stats = Stats("locust", src, {"name": f"locust-{os.getpid()}"})
            client = make_client(settings, "producer", "locust")
            self._producer = Producer.from_settings(
                settings, client=client, src=src, stats=self._stats
            )
            self._settings = settings
            Flusher(settings.stats_interval_s, self.flush_stats, "locust-stats").start()
        return self._producer

    def flush_stats(self) -> None:
        """Write the Producer's counters to its stats hash now (nothing before the first use)."""
        if self._producer and self._stats and self._settings:
            try:
                pipe = self._producer.client.pipeline(transaction=False)
                self._stats.flush(pipe, self._settings.stats_ttl_s, self._settings.stats_interval_s)
                pipe.execute()
            except redis.RedisError as exc:
                log.debug("stats flush failed: %s", exc)


def sent_line(sys: str, mode: str, via: str, dest: str, lid: str, t0: float,
              **fields: Any) -> Fields:  # fmt: skip
    """A ``sent`` line: every documented field, ``t1`` now, ``fields`` over the defaults
    (no answer, outcome unknown)."""
    line = dict(k="sent", sys=sys, mode=mode, via=via, dest=dest, lid=lid, t0=t0,
                t1=records.now(), st=0, out="unknown", id=None, src=None, seq=None, rc=None,
                err=None)  # fmt: skip
    line.update(fields)
    return line


def bus_outcome(status: int, content: bytes | None, error: object) -> tuple[Fields, str | None]:
    """redis-bus's answer as ledger fields, and a failure message unless it is a 2xx.

    202: accepted (id, src, seq and receivers from the body). 4xx: rejected. 503: the body's
    ``outcome`` ("rejected": surely not sent; "unknown": it may have run). Anything else,
    no answer or a timeout: unknown."""
    body = _json(content)
    if status == 202:
        fields = {"st": status, "out": "accepted", "id": body.get("id"), "src": body.get("src"),
                  "seq": body.get("seq"), "rc": body.get("receivers")}  # fmt: skip
        return fields, None
    if 200 <= status < 300:
        return {"st": status, "out": "unknown", "err": f"unexpected {status}"}, None
    err = short(body.get("error") or error or f"HTTP {status}")
    if 400 <= status < 500:
        return {"st": status, "out": "rejected", "err": err}, err
    outcome = body.get("outcome") if status == 503 else None
    out = outcome if outcome in ("rejected", "unknown") else "unknown"
    return {"st": status, "out": out, "err": err}, err


def baseline_outcome(status: int, error: object) -> tuple[Fields, str | None]:
    """The naive app's answer: 2xx accepted; anything else unknown (it cannot tell)."""
    if 200 <= status < 300:
        return {"st": status, "out": "accepted"}, None
    err = short(error or f"HTTP {status}")
    return {"st": status, "out": "unknown", "err": err}, err


def short(value: object) -> str:
    """An error as a short text for a ledger line or locust's failure table."""
    return str(value)[:200]


def _json(content: bytes | None) -> dict[str, Any]:
    try:
        body = json.loads(content or b"")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
