"""The stats schema: what each process counts, and how it lands in ``bus:stats:<role>:<id>``.

Every daemon and web process owns one hash and overwrites it every ``stats_interval_s`` with
absolute values (so a lost write is repaired by the next), with a TTL of ``stats_ttl_s`` so a
dead process disappears by itself. ``bus:stats:index`` lists the live hashes, so readers never
SCAN the keyspace.

Hash fields: ``role``, ``id``, ``pid``, ``host``, ``started_ms``, ``updated_ms``, free-form
labels (``queue``, ``channels``, ``delivery``), the counters of :data:`COUNTERS`, and latency
buckets ``lat_le_<ms>`` (``lat_le_inf`` last) with ``lat_count`` and ``lat_sum_ms``.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import redis

from producer import keys
from producer.envelope import now_ms

COUNTERS = (
    "pushed",  # producers: LPUSH accepted
    "published",  # producers: PUBLISH done
    "published_zero",  # producers: PUBLISH reached no subscriber (the message went nowhere)
    "unconfirmed",  # producers: sent, but the reply was lost: it may or may not have run
    "refused_full",  # producers: not pushed, the queue was at BUS_MAX_QUEUE_DEPTH (web: 429)
    "rejected",  # web: 4xx answers
    "unavailable",  # web: 503 answers (Redis down, timing out, out of memory, BUSY, LOADING)
    "handled",  # worker: handler returned; subscriber: handler returned
    "failed",  # handler raised
    "retried",  # worker: requeued for another attempt
    "dead_lettered",  # garbage or attempts exhausted
    "dead_dropped",  # worker: old dead letters trimmed by the cap (BUS_DEAD_MAX)
    "recovered",  # worker: own in-flight messages requeued after a restart or reconnect
    "received",  # subscriber: messages read from the channel
    "lost",  # subscriber: sequence gaps (published but never received)
    "duplicates",  # subscriber: a sequence number seen twice
    "out_of_order",  # subscriber: a sequence number older than the newest seen
    "reconnects",  # daemon: connections re-established after an error
    "pings",  # subscriber: health-check PINGs sent
    "deadline_misses",  # subscriber: no PONG in time, link dropped
)
log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0  # the same kind of tick error is logged at most this often
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
LAT_FIELDS = (*(f"lat_le_{b}" for b in LATENCY_BUCKETS_MS), "lat_le_inf")


class Stats:
    """Thread-safe counters and a latency histogram for one process."""

    def __init__(self, role: str, ident: str, labels: Mapping[str, str] | None = None) -> None:
        self.role = role
        self.ident = ident
        self.key = keys.stats(role, ident)
        self.labels = dict(labels or {})
        self.started_ms = now_ms()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._lat = [0] * len(LAT_FIELDS)
        self._lat_sum_ms = 0

    def incr(self, counter: str, by: int = 1) -> None:
        """Add ``by`` to ``counter`` (one of :data:`COUNTERS`)."""
        with self._lock:
            self._counts[counter] += by

    def observe_latency_ms(self, ms: float) -> None:
        """Record one end-to-end latency."""
        ms = max(ms, 0)
        index = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)  # past the last bound: the +inf bucket
        with self._lock:
            self._lat[index] += 1
            self._lat_sum_ms += int(ms)

    def observe_latencies_ms(self, values: list[int]) -> None:
        """Record many end-to-end latencies at once (a consumer's batch: one lock, not one
        per message)."""
        indexes = [bisect.bisect_left(LATENCY_BUCKETS_MS, ms) for ms in values]
        total = sum(ms for ms in values if ms > 0)
        with self._lock:
            lat = self._lat
            for index in indexes:
                lat[index] += 1
            self._lat_sum_ms += total

    def get(self, counter: str) -> int:
        """The current value of ``counter``."""
        return self._counts[counter]

    def snapshot(self) -> dict[str, str | int]:
        """Every field of the stats hash, as it would be written now."""
        with self._lock:
            counts = dict(self._counts)
            lat = list(self._lat)
            lat_sum = self._lat_sum_ms
        fields: dict[str, str | int] = {
            "role": self.role,
            "id": self.ident,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_ms": self.started_ms,
            "updated_ms": now_ms(),
            **self.labels,
            **counts,
        }
        fields.update(zip(LAT_FIELDS, lat, strict=True))
        fields["lat_count"] = sum(lat)
        fields["lat_sum_ms"] = lat_sum
        return fields

    def flush(self, pipe: redis.client.Pipeline, ttl_s: float) -> None:
        """Queue the commands that publish this snapshot, and drop the index entries older
        than ``ttl_s``, on ``pipe`` (caller executes)."""
        fields = self.snapshot()
        pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
        pipe.pexpire(self.key, int(ttl_s * 1000))
        pipe.zadd(keys.STATS_INDEX, {self.key: fields["updated_ms"]})
        # The writers keep the index short, so that reading the stats never writes.
        horizon = int(fields["updated_ms"]) - int(ttl_s * 1000)
        pipe.zremrangebyscore(keys.STATS_INDEX, "-inf", f"({horizon}")


class Flusher(threading.Thread):
    """Background thread calling ``tick()`` every ``interval_s`` until stopped. Nothing a tick
    raises ends the thread (it is logged, at most once a minute per kind of error), and once
    :meth:`stop` has returned no tick runs or is still running."""

    def __init__(
        self, interval_s: float, tick: Callable[[], None], name: str = "bus-stats"
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self._tick = tick
        self.stopping = threading.Event()
        self._ticking = threading.Lock()  # held for the whole of each tick
        self._logged: dict[str, float] = {}  # error kind -> when it was last logged

    def run(self) -> None:
        next_at = time.monotonic()
        while True:
            with self._ticking:
                if self.stopping.is_set():
                    return
                try:
                    self._tick()
                except Exception as exc:  # a bug must not stop the heartbeat
                    self._log(exc)
            next_at += self.interval_s
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        """Stop the thread: wait for a tick in progress (bounded by the tick's own Redis
        deadlines); none starts after this returns."""
        self.stopping.set()
        with self._ticking:
            pass
        if self.is_alive() and self is not threading.current_thread():
            self.join()

    def _log(self, exc: Exception) -> None:
        kind = type(exc).__name__
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[kind] = now
            log.error("%s: periodic work failed; it goes on", self.name, exc_info=exc)
