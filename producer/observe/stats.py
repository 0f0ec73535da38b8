"""The stats schema: what each process counts, and how it lands in Redis.

Every daemon and web process owns one hash, ``bus:{stats}:<role>:<id>``, and overwrites it every
``stats_interval_s`` with absolute values (so a lost write is repaired by the next), with a TTL
of ``stats_ttl_s`` so a dead process disappears by itself. ``bus:{stats}:index`` lists the live
hashes, so readers never SCAN the keyspace.

Hash fields: ``role``, ``id``, ``pid``, ``host``, ``started_ms``, ``updated_ms``,
``interval_ms`` (how often it writes), free-form labels (``name``, ``queue``, ``channels``,
``delivery``), live state (a subscriber's ``deaf_since_ms``, ``deaf_after_ms``; a worker's
``slots``, ``busy``, ``oldest_started_ms``, ``oldest_limit_ms``, ``abandoned``: see
:mod:`producer.observe.inhand`), the counters
of :data:`COUNTERS`, their rates over the last few seconds (``<counter>_per_s`` for
:data:`RATES`), and latency buckets ``lat_le_<ms>`` (``lat_le_inf`` last) with ``lat_count``
and ``lat_sum_ms``.

The same write adds what the process counted since its last write to ``bus:{stats}:totals``:
bus-wide counters that outlive the processes and never go down (what Prometheus wants), one
field per counter and labels (see :meth:`Stats.totals`). The write is idempotent: each run of
a process keeps what it has already added in ``bus:{stats}:applied:<role>:<id>:<run>``, so a
write repeated after a lost reply adds nothing twice. At most once a second (Redis's clock),
whichever process writes first also appends a sample of the totals to ``bus:{stats}:history``.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping

import redis

from producer.observe import totals
from producer.store import keys, scripts
from producer.store.envelope import now_ms

COUNTERS = (
    "pushed",  # producers: LPUSH accepted
    "published",  # producers: PUBLISH done
    "published_zero",  # producers: PUBLISH reached no subscriber (the message went nowhere)
    "unconfirmed",  # producers: sent, but the reply was lost: it may or may not have run
    "refused_full",  # producers: not pushed, the queue was at BUS_MAX_QUEUE_DEPTH (web: 429)
    "scheduled",  # producers: of the pushed, those sent to wait in bus:{q}:delayed
    "rejected",  # web: 4xx answers
    "unavailable",  # web: 503 answers (Redis down, timing out, out of memory, BUSY, LOADING)
    "handled",  # worker: handler returned; subscriber: handler returned
    "failed",  # handler raised
    "retried",  # worker: requeued for another attempt
    "dead_lettered",  # garbage or attempts exhausted
    "timed_out",  # worker: handlers past their time limit (their attempt failed, their slot freed)
    "fields_ignored",  # consumers: handled with accounting fields ignored (seq 0, ts "abc"...)
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
# Counters kept per destination too; the label their totals carry.
DEST_LABEL = {
    "pushed": "queue",
    "refused_full": "queue",
    "scheduled": "queue",
    "published": "channel",
    "published_zero": "channel",
    "received": "channel",
    "lost": "channel",
    "duplicates": "channel",
    "out_of_order": "channel",
}
MAX_DESTS = 256  # destinations kept apart per counter; the rest are counted under OTHER_DEST
OTHER_DEST = "_other"
RATES = ("pushed", "published", "handled", "received", "lost")  # <counter>_per_s fields
RATE_WINDOW_S = 5.0
MODES = {"worker": "prodcons", "subscriber": "pubsub"}  # the latency histogram's mode label
log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0  # the same kind of tick error is logged at most this often
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
LAT_FIELDS = (*(f"lat_le_{b}" for b in LATENCY_BUCKETS_MS), "lat_le_inf")


class Stats:
    """Thread-safe counters and a latency histogram for one process.

    ``scope`` holds the labels its bus-wide totals carry besides ``role`` (a worker's
    ``queue`` and ``delivery``); counters of :data:`DEST_LABEL` are also kept per destination
    when :meth:`incr` is told it.
    """

    def __init__(
        self,
        role: str,
        ident: str,
        labels: Mapping[str, str] | None = None,
        scope: Mapping[str, str] | None = None,
    ) -> None:
        self.role = role
        self.ident = ident
        self.key = keys.stats(role, ident)
        self.labels = dict(labels or {})
        self.scope = dict(scope or {})
        self.started_ms = now_ms()
        self.run = uuid.uuid4().hex[:12]  # this run's applied-totals key: a restart starts anew
        self.applied_key = keys.stats_applied(role, ident, self.run)
        self.interval_ms = 0  # set by flush: how often this process writes
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._dests: dict[str, dict[str, int]] = {c: {} for c in DEST_LABEL}
        self._state: dict[str, str | int] = {}
        self._lat = [0] * len(LAT_FIELDS)
        self._lat_sum_ms = 0
        self._rate_marks: deque[tuple[float, tuple[int, ...]]] = deque()

    def incr(self, counter: str, by: int = 1, dest: str | None = None) -> None:
        """Add ``by`` to ``counter`` (one of :data:`COUNTERS`), and to its count for ``dest``
        (a queue or channel name) when given."""
        with self._lock:
            self._counts[counter] += by
            if dest is not None:
                self._add_dest(counter, dest, by)

    def incr_dests(self, counter: str, by_dest: Mapping[str, int]) -> None:
        """Add a batch's counts per destination to ``counter`` (one lock for the batch)."""
        with self._lock:
            for dest, by in by_dest.items():
                self._counts[counter] += by
                self._add_dest(counter, dest, by)

    def _add_dest(self, counter: str, dest: str, by: int) -> None:
        dests = self._dests[counter]
        if dest not in dests and len(dests) >= MAX_DESTS:
            dest = OTHER_DEST
        dests[dest] = dests.get(dest, 0) + by

    def set_state(self, **fields: str | int) -> None:
        """Live fields written with the counters (a subscriber's ``deaf_since_ms``)."""
        with self._lock:
            self._state.update(fields)

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
        seen = Counter(values)  # a batch's latencies repeat: one bucket lookup per value
        counts = [(bisect.bisect_left(LATENCY_BUCKETS_MS, ms), n) for ms, n in seen.items()]
        total = sum(ms * n for ms, n in seen.items() if ms > 0)
        with self._lock:
            lat = self._lat
            for index, n in counts:
                lat[index] += n
            self._lat_sum_ms += total

    def get(self, counter: str) -> int:
        """The current value of ``counter``."""
        return self._counts[counter]

    def snapshot(self) -> dict[str, str | int]:
        """Every field of the stats hash, as it would be written now."""
        with self._lock:
            counts = dict(self._counts)
            state = dict(self._state)
            lat = list(self._lat)
            lat_sum = self._lat_sum_ms
        fields: dict[str, str | int] = {
            "role": self.role,
            "id": self.ident,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_ms": self.started_ms,
            "updated_ms": now_ms(),
            "interval_ms": self.interval_ms,
            **self.labels,
            **state,
            **counts,
        }
        fields.update(self._rates(counts))
        fields.update(zip(LAT_FIELDS, lat, strict=True))
        fields["lat_count"] = sum(lat)
        fields["lat_sum_ms"] = lat_sum
        return fields

    def _rates(self, counts: Mapping[str, int]) -> dict[str, str]:
        """``<counter>_per_s`` over the last :data:`RATE_WINDOW_S` (since the start at first)."""
        now = time.monotonic()
        values = tuple(counts[c] for c in RATES)
        with self._lock:
            marks = self._rate_marks
            if not marks:
                marks.append(
                    (now - max(1e-3, (now_ms() - self.started_ms) / 1000), (0,) * len(RATES))
                )
            while len(marks) > 1 and now - marks[1][0] >= RATE_WINDOW_S:
                marks.popleft()
            then, old = marks[0]
            marks.append((now, values))
        elapsed = max(now - then, 1e-3)
        return {
            f"{c}_per_s": f"{max(0, v - o) / elapsed:.2f}"
            for c, v, o in zip(RATES, values, old, strict=True)
        }

    def totals(self) -> dict[str, int]:
        """This run's contribution to ``bus:{stats}:totals`` (absolute, nonzero only): every
        counter under ``role`` and :attr:`scope`, the per-destination ones under their
        destination too, and the latency histogram under ``mode``."""
        with self._lock:
            counts = dict(self._counts)
            dests = {c: dict(d) for c, d in self._dests.items() if d}
            lat = list(self._lat)
            lat_sum = self._lat_sum_ms
        base = {"role": self.role, **self.scope}
        out: dict[str, int] = {}
        for counter, value in counts.items():
            rest = value
            for dest, n in dests.get(counter, {}).items():
                label = {**base, DEST_LABEL[counter]: dest}
                out[totals.series_field(counter, label)] = n
                rest -= n
            if rest > 0:
                out[totals.series_field(counter, base)] = rest
        mode = MODES.get(self.role)
        if mode and any(lat):
            for field, n in zip(LAT_FIELDS, lat, strict=True):
                if n:
                    out[totals.series_field(field, {"mode": mode})] = n
            out[totals.series_field("lat_count", {"mode": mode})] = sum(lat)
            out[totals.series_field("lat_sum_ms", {"mode": mode})] = lat_sum
        return {k: v for k, v in out.items() if v > 0}

    def flush(self, pipe: redis.client.Pipeline, ttl_s: float, interval_s: float = 0) -> None:
        """Queue the script that publishes this snapshot, adds to the bus-wide totals what was
        counted since the last write, and drops the index entries older than ``ttl_s``, on
        ``pipe`` (caller executes). ``interval_s``: how often the caller flushes (recorded)."""
        if interval_s:
            self.interval_ms = int(interval_s * 1000)
        fields = self.snapshot()
        contribution = self.totals()
        args: list[str | int] = [
            int(ttl_s * 1000), fields["updated_ms"], totals.APPLIED_TTL_S * 1000,
            totals.HISTORY_LEN, 2 * len(fields),
        ]  # fmt: skip
        for pair in fields.items():
            args.extend(pair)
        for pair in contribution.items():
            args.extend(pair)
        flush_keys = [self.key, keys.STATS_INDEX, self.applied_key, keys.STATS_TOTALS,
                      keys.STATS_HISTORY, keys.STATS_HISTORY_TICK]  # fmt: skip
        scripts.FLUSH_STATS(pipe, flush_keys, args)


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
