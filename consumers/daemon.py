"""What the worker and the subscriber share: the reconnect loop, the stats thread, stopping.

A daemon never blocks forever and never dies of a Redis error. ``serve()`` runs until
:meth:`Daemon.stop` is called or the connection breaks; a broken connection is logged with the
next delay, counted in ``reconnects``, backed off (capped full jitter) and served again.
Library classes install no signal handlers: the CLI maps SIGTERM/SIGINT to :meth:`stop`.

One exception: before the first connection succeeded, a refusal that says the configuration
is wrong (a certificate the CA did not sign, a login Redis refuses, a user not allowed what
connecting needs, a client name Redis refuses) ends :meth:`Daemon.run` with
:class:`ConfigurationRefused` naming the setting (the CLI exits 78): retrying cannot fix it.
Once connected, the same refusals are retried like an outage: a certificate or a password may
be being rotated.

The loop runs in one thread at a time, its leader: the thread that called :meth:`Daemon.run`
until it hands the loop over to another (:meth:`Daemon.hand_over`: a worker whose own thread is
held up in a handler). The thread that ends the loop ends the daemon; :meth:`Daemon.run`
returns once it has, in whichever thread called it.

Messages whose accounting fields the envelope decoder ignored (a foreign producer's ``"seq":
0``...) are counted in ``fields_ignored`` and logged, at WARNING at most once a minute.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import redis

from consumers.refusals import certificate_refused, configuration_refused
from producer import Backoff, Envelope, Settings, make_client
from producer.connection.client import drop_connections
from producer.connection.cluster import is_stale_error
from producer.errors import (
    BusError,
    CertificateRefused,
    ConfigurationRefused,
    HandlersStuck,
    TimeLimitExceeded,
)
from producer.observe.stats import COUNTERS, Flusher, Stats
from producer.store.envelope import now_ms, report_ignored_fields_to

log = logging.getLogger(__name__)
SUMMARY_INTERVAL_S = 60.0


class Demoted(BusError):
    """Not an error anyone meets: ends the loop in a thread that handed it over to another (see
    :meth:`Daemon.hand_over`)."""


class Daemon:
    """Base of the long-running consumers; subclasses implement :meth:`serve`."""

    role = "daemon"

    def __init__(self, settings: Settings, name: str, stats: Stats) -> None:
        self.settings = settings
        self.name = name
        self.stats = stats
        self.stopping = threading.Event()
        self.admin = make_client(settings, "admin", name)
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
        self._flusher = Flusher(settings.stats_interval_s, self._tick, name=f"{self.role}-stats")
        self._tick_failing: set[str] = set()  # parts failing for Redis, logged once
        # Redis answered the last serve() with an error (out of memory, say): the link is fine,
        # so reconnecting is no progress; the backoff keeps growing until a command works.
        self._refused = False
        self._tick_error_at: dict[str, float] = {}  # parts failing for a bug: last logged
        self._summary_at = time.monotonic()
        self.connected_once = threading.Event()
        self.finished = threading.Event()  # set once run() has returned
        self.failure: BaseException | None = None  # what ended run() other than stop()
        self._leader: threading.Thread | None = None  # the thread that runs the loop
        self._handed_over = False  # to a new thread, which has not served yet
        self._ignored_warned_at = -SUMMARY_INTERVAL_S  # last WARNING about ignored fields
        self._ignored_unwarned = 0  # messages with ignored fields since that WARNING

    def serve(self) -> None:
        """Connect and consume until :attr:`stopping` is set; raise on a broken connection."""
        raise NotImplementedError

    def close_connections(self) -> None:
        """Drop the consuming connection after an error, so the next serve() starts afresh."""

    def on_tick(self, pipe: redis.client.Pipeline) -> None:
        """Queue extra periodic commands (heartbeats) on the stats pipeline."""

    def on_stats(self) -> None:
        """Set live state fields just before the stats are written (a worker's slots)."""

    def after_tick(self) -> None:
        """Periodic work of its own round trips (the reaper), on the stats thread."""

    def on_exit(self) -> None:
        """Clean up in Redis after the loop ended (best effort)."""

    def on_end(self) -> None:
        """Stop this daemon's own threads, last (in the thread that ends the daemon)."""

    def stop(self) -> None:
        """Ask the loop to finish the message in hand and return (safe from a signal handler)."""
        self.stopping.set()

    def run(self) -> None:
        """The reconnect loop: serve; on any Redis error log, back off and serve again. Anything
        else that ends it (a bug, a handler raising SystemExit) is kept in :attr:`failure`
        for the caller, which must not let the process live on without this consumer. Returns
        once the daemon ended, also when another thread took the loop over meanwhile."""
        self._leader = threading.current_thread()
        self._flusher.start()
        self._lead()
        while not self.finished.is_set():  # the loop was handed over: its new leader ends it
            with contextlib.suppress(TimeLimitExceeded):  # a late one, for a handler given up on
                self.finished.wait()

    @property
    def leader(self) -> threading.Thread | None:
        """The thread that runs the loop (None before :meth:`run`)."""
        return self._leader

    def leads(self) -> bool:
        """This thread runs the loop."""
        return self._leader is threading.current_thread()

    def hand_over(self) -> threading.Thread:
        """Have a new thread run the loop from now on, as after a reconnect; the thread that ran
        it is :class:`Demoted` as soon as it looks (call only while it cannot look)."""
        thread = threading.Thread(target=self._lead, name=f"{self.role}-{self.name}", daemon=True)
        self._leader = thread
        self._handed_over = True  # its serve() is no reconnect
        thread.start()
        return thread

    def _lead(self) -> None:
        """Run the loop in this thread; then end the daemon, unless the loop was handed over
        to another thread meanwhile (that one ends it)."""
        previous_sink = report_ignored_fields_to(self.fields_ignored)  # this thread's decodes
        try:
            self._loop()
        except BaseException as exc:  # recorded and reported, never swallowed
            if not self.leads():
                return  # Demoted, or a late error of the handler it was running
            self.failure = exc
            log.critical(
                "%s %s: stopped by %s: %s",
                self.role,
                self.name,
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, SystemExit | ConfigurationRefused | HandlersStuck),
            )
        finally:
            report_ignored_fields_to(previous_sink)
        self._end()

    def _end(self) -> None:
        try:
            self.close_connections()
        finally:
            self._flusher.stop()  # no heartbeat can land after on_exit withdraws it
            self.stats.set_state(stopped_ms=now_ms())
            self._guarded(self._tick)  # the last counts
            self._guarded(self.on_exit)
            self._guarded(self.on_end)
            self.log_summary()
            self.finished.set()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.serve()
            except redis.RedisError as exc:
                self.close_connections()
                if self.stopping.is_set():
                    break
                first = not self.connected_once.is_set()
                if first and certificate_refused(exc):
                    # Before the first connection, a certificate the CA did not sign (or that
                    # names another host) is a configuration to fix, not an outage to wait out.
                    # Once connected, a later refusal is retried: a certificate may be rotating.
                    raise CertificateRefused(str(exc)) from exc
                refused = configuration_refused(exc, self.settings, f"a {self.role}", self.name)
                if first and refused:
                    # The same for a login, a user's rights or a client name Redis refuses.
                    # Once connected, retried: a password may be being rotated.
                    raise ConfigurationRefused(refused) from exc
                delay = self.backoff.next_delay_s()
                broken = isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
                # A refusal (out of memory, say) leaves the link as it was; an answer that the
                # server changed role or the slot moved (READONLY, UNBLOCKED, MOVED) means a
                # reconnect, to another node.
                self._refused = not broken and not is_stale_error(exc)
                log.warning(
                    "%s %s: %s (%s: %s); reconnect attempt %d in %.2fs",
                    self.role,
                    self.name,
                    "Redis connection lost" if broken else "Redis answered an error",
                    type(exc).__name__,
                    refused or exc,
                    self.backoff.failures,
                    delay,
                )
                self.stopping.wait(delay)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # the exit goes on: the reaper repairs what this could not
            log.exception("%s %s: %s failed on exit", self.role, self.name, step.__name__)

    def fields_ignored(self, env: Envelope, notes: tuple[str, ...]) -> None:
        """A message this daemon's thread decoded with accounting fields ignored (see
        :func:`producer.store.envelope.decode`): it is handled all the same; counted, and logged at
        WARNING at most once a minute (DEBUG otherwise), so a producer that always sends them
        cannot flood the log."""
        self.stats.incr("fields_ignored")
        where = f" queue {queue}" if (queue := getattr(self, "queue", None)) else ""
        now = time.monotonic()
        if now - self._ignored_warned_at < SUMMARY_INTERVAL_S:
            self._ignored_unwarned += 1
            log.debug("%s %s:%s message %s: ignored %s", self.role, self.name, where, env.id,
                      "; ".join(notes))  # fmt: skip
            return
        since = f"; {self._ignored_unwarned} more since the last such warning" if (
            self._ignored_unwarned) else ""  # fmt: skip
        log.warning(
            "%s %s:%s message %s: ignored %s: handled, left out of the accounting (counted "
            "in fields_ignored; at most one such warning a minute%s)",
            self.role, self.name, where, env.id, "; ".join(notes), since,
        )  # fmt: skip
        self._ignored_warned_at, self._ignored_unwarned = now, 0

    def mark_connected(self) -> None:
        """Called by serve() once subscribed/ready: resets backoff and counts a reconnect
        (after a lost link; after an error answer, :meth:`mark_serving` resets it once a
        command goes through)."""
        if self._refused:
            self.connected_once.set()
            return
        if self._handed_over:
            self._handed_over = False
            if not self.backoff.failures:  # nothing failed in between: not a reconnect
                return
        if self.connected_once.is_set():
            self.stats.incr("reconnects")
            log.warning(
                "%s %s: reconnected after %d failed attempts",
                self.role,
                self.name,
                self.backoff.failures,
            )
        self.connected_once.set()
        self.backoff.reset()

    def mark_serving(self) -> None:
        """Called by serve() after a command went through: Redis no longer refuses them."""
        if self._refused:
            self._refused = False
            log.warning("%s %s: Redis accepts commands again after %d refusals", self.role,
                        self.name, self.backoff.failures)  # fmt: skip
            self.backoff.reset()

    def _tick(self) -> None:
        """The periodic work, in independent parts: a failure of one (writing the stats, say)
        must not cost the others (the heartbeat that keeps this worker from being reaped)."""
        self._tick_part("stats not written", self._write_stats)
        self._tick_part("heartbeat or reaper failed", self.after_tick)
        now = time.monotonic()
        if now - self._summary_at >= SUMMARY_INTERVAL_S:
            self._summary_at = now
            self.log_summary()

    def _write_stats(self) -> None:
        self.on_stats()
        pipe = self.admin.pipeline(transaction=False)
        self.stats.flush(pipe, self.settings.stats_ttl_s, self.settings.stats_interval_s)
        self.on_tick(pipe)
        pipe.execute()

    def _tick_part(self, what: str, part: Callable[[], None]) -> None:
        try:
            part()
        except redis.RedisError as exc:  # Redis away: logged once until it works again
            if what not in self._tick_failing:
                log.info("%s %s: %s (%s); will retry", self.role, self.name, what, exc)
            self._tick_failing.add(what)
            drop_connections(self.admin)
        except Exception:  # a bug: loud, once a minute, and the other parts go on
            now = time.monotonic()
            if now - self._tick_error_at.get(what, -SUMMARY_INTERVAL_S) >= SUMMARY_INTERVAL_S:
                self._tick_error_at[what] = now
                log.exception("%s %s: %s", self.role, self.name, what)
        else:
            self._tick_failing.discard(what)

    def log_summary(self) -> None:
        """One INFO line with the counters that moved since the start."""
        snap = self.stats.snapshot()
        moved = " ".join(f"{c}={snap[c]}" for c in COUNTERS if snap[c])
        log.info("%s %s: %s", self.role, self.name, moved or "idle")
