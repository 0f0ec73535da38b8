"""What a worker does with one message, in the slot that runs it: decode it, call the handler (a
plain function in a thread, an ``async def`` on the event loop), and decide the outcome that the
dispatcher will settle: an ack, a retry while attempts remain (at-least-once), or a dead letter.

Nothing here talks to the worker's own connection, which only the dispatcher uses: the few
writes a slot makes (a record's in-flight before a handler that no claim script announced, an
at-most-once result, progress reports) go through the worker's pooled admin client.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import traceback
from collections.abc import Callable

import redis

from consumers.delayed import retry_how
from consumers.held import HANDLER, Held
from consumers.lists import CANCELLED, QueueOps
from consumers.moves import ACK, CANCEL, give_back_move, tracked_how
from consumers.tracking import Context, encode_result, takes_context
from producer import Envelope, EnvelopeError, Settings, decode
from producer.errors import Reject, TimeLimitExceeded
from producer.observe.stats import Stats

log = logging.getLogger("consumers.worker")


def is_async(handler: Callable[..., object]) -> bool:
    """An ``async def`` (or an object whose ``__call__`` is one): awaited on the event loop."""
    call = getattr(handler, "__call__", None)  # noqa: B004 -- an instance's async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


class Handling:
    """Runs ``handler`` on the messages of one queue and decides their outcomes."""

    def __init__(self, settings: Settings, queue: str, name: str, handler: Callable[..., object],
                 ops: QueueOps, stats: Stats) -> None:  # fmt: skip
        self.settings = settings
        self.queue = queue
        self.name = name
        self.ops = ops  # on the admin client: thread-safe
        self.stats = stats
        self.at_least_once = settings.delivery == "at-least-once"
        self._limit_s = settings.handler_timeout_s
        self._consumer = name if self.at_least_once else None
        self.set_handler(handler)

    def set_handler(self, handler: Callable[..., object]) -> None:
        self.handler = handler
        self._with_context = takes_context(handler)  # handler(env, ctx) rather than handler(env)

    def run(self, held: Held) -> None:
        """Run a plain handler on ``held`` (in a slot thread) and decide its outcome."""
        env = self._prepare(held)
        if env is None:
            return
        try:
            if self._with_context:
                result = self.handler(env, self._context(env))
            else:
                result = self.handler(env)
            if result is not None and inspect.isawaitable(result):  # it never ran
                _discard(result)
                what = f"{type(result).__name__} {result!r}"
                raise Reject(f"the handler returned {what}, which a plain function's worker "
                             "cannot await (declare the handler async def)")  # fmt: skip
        except Exception as exc:  # the handler's failure is data, not a reason to stop
            self._finish(held, env, error=exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the process ends
            self._fatal(held, env, exc)
        else:
            self._finish(held, env, result)

    async def run_async(self, held: Held) -> None:
        """Await an ``async def`` handler on ``held`` (on the event loop) and decide its outcome."""
        env = self._prepare(held)
        if env is None:
            return
        try:
            if self._with_context:
                result = await self.handler(env, self._context(env))  # type: ignore[misc]
            else:
                result = await self.handler(env)  # type: ignore[misc]
        except asyncio.CancelledError:  # given up on at its time limit: decided already
            held.ran_s = time.monotonic() - held.started_at
            raise
        except Exception as exc:
            self._finish(held, env, error=exc)
        except BaseException as exc:
            self._fatal(held, env, exc)
        else:
            self._finish(held, env, result=result)

    def timed_out(self, held: Held, now: float) -> None:
        """Decide the outcome of a message whose handler is past its limit: a failed attempt."""
        env = held.env
        assert env is not None
        self.stats.incr("timed_out")
        ran = now - held.started_at
        where = "its timeout_s" if env.timeout_s else "BUS_HANDLER_TIMEOUT_S"
        error = TimeLimitExceeded(
            f"the handler timed out: still running {ran:.1f} s after it started, past its limit "
            f"of {held.limit_s:g} s ({where}); its slot was freed, a late result is discarded"
        )
        log.warning("queue %s: handler timed out on %s attempt %d after %.1f s", self.queue,
                    env.id, env.attempt, ran)  # fmt: skip
        self._failed(held, env, error)

    def stalled(self, held: Held) -> None:
        """Decide the outcome of a message whose event loop another handler blocked past that
        one's limit: it is not blamed (at-least-once: given back, no attempt counted;
        at-most-once, which never delivers twice: dead-lettered, saying why)."""
        env = held.env  # None: its task never got to run
        if self.at_least_once:
            held.move = give_back_move(held.raw)
            return
        reason = ("the event loop running its handler was blocked by another handler past "
                  "that one's time limit (at-most-once: not delivered again)")  # fmt: skip
        self.stats.incr("dead_lettered")
        held.move = self.ops.dead_move(held.raw, reason, None, env)

    def stopped(self, held: Held) -> None:
        """At-most-once, at exit: a handler still running; never delivered again, so dead."""
        env = held.env
        reason = (
            f"the worker stopped while its handler ran (after BUS_STOP_TIMEOUT_S="
            f"{self.settings.stop_timeout_s:g}); at-most-once: not delivered again"
        )
        self.stats.incr("dead_lettered")
        held.move = self.ops.dead_move(held.raw, reason, None, env)

    def _context(self, env: Envelope) -> Context:
        return Context(env, self.queue, self.name, self._progress_writer(env),
                       lambda: self.ops.cancel_asked(env),
                       lambda: self.ops.results(env))  # fmt: skip

    def _prepare(self, held: Held) -> Envelope | None:
        """Decode ``held`` and start its clock; garbage is dead-lettered (None: no handler)."""
        try:
            env = decode(held.raw, default_mode="prodcons")
        except EnvelopeError as exc:
            log.warning("queue %s: dead-lettering garbage (%s, %d bytes)", self.queue, exc,
                        len(held.raw))  # fmt: skip
            self.stats.incr("dead_lettered")
            held.move = self.ops.dead_move(held.raw, f"undecodable: {exc.reason}", self._consumer)
            return None
        held.env = env
        if env.ts:  # 0: the producer did not say when it sent it
            held.latency_ms = time.time_ns() // 1_000_000 - env.ts  # (now_ms(), inlined)
        if env.track and (held.popped or not self.at_least_once):
            # No claim script saw it: its in-flight is written here, before the handler runs;
            # one cancelled while it waited is dropped (counted, its record says cancelled).
            written = self._record(env, "in-flight", "worker", self.name, "attempt", env.attempt)
            if written == CANCELLED:
                log.info("queue %s: %s was cancelled while it waited: dropped", self.queue,
                         env.id)  # fmt: skip
                held.move = (
                    (held.raw, b"", tracked_how(CANCEL, env)) if self.at_least_once else None
                )
                return None
        held.limit_s = env.timeout_s or self._limit_s
        if env.attempt > 1 and self.at_least_once:  # a crash then charges it an attempt
            try:
                self.ops.mark_started(self.name, held.raw)
                held.marked = True
            except redis.RedisError as exc:
                log.warning("queue %s: the start of %s attempt %d not noted (%s): a crash now "
                            "would not charge it an attempt", self.queue, env.id, env.attempt,
                            exc)  # fmt: skip
        held.started_at = time.monotonic()  # from here on its handler may have seen it
        if held.decided_by is not None:  # the worker exited meanwhile: settled without it
            return None
        return env

    def _finish(self, held: Held, env: Envelope, result: object = None,
                error: BaseException | None = None) -> None:  # fmt: skip
        held.ran_s = time.monotonic() - held.started_at
        if not held.decide(HANDLER):  # given up on at its limit: settled already
            log.warning("queue %s: the handler of %s attempt %d ended %.1f s after it started, "
                        "past its limit: its %s is discarded", self.queue, env.id, env.attempt,
                        held.ran_s, "error" if error else "result")  # fmt: skip
            return
        if error is not None:
            self._failed(held, env, error)
            return
        held.handled = True
        if not env.track:
            held.move = (held.raw, b"", ACK) if self.at_least_once else None
            return
        data, refused = encode_result(result, self.settings.result_max_bytes)
        if refused:
            log.warning("queue %s: message %s: %s", self.queue, env.id, refused)
        if self.at_least_once:
            held.move = held.raw, data, tracked_how(ACK, env, refused)
            return
        fields: list[str | int] = ["attempt", env.attempt, "progress", 1]
        if data:
            fields += ["result", data.decode()]
        if refused:
            fields += ["result_error", refused]
        held.record = fields

    def _fatal(self, held: Held, env: Envelope, exc: BaseException) -> None:
        """A handler raised SystemExit, KeyboardInterrupt...: its message is settled as a failed
        attempt, then the worker exits (:attr:`Held.fatal`)."""
        log.error("queue %s: handler raised %s on %s attempt %d; the worker will exit",
                  self.queue, type(exc).__name__, env.id, env.attempt)  # fmt: skip
        self._finish(held, env, error=exc)
        if held.decided_by == HANDLER:
            held.fatal = exc

    def _failed(self, held: Held, env: Envelope, exc: BaseException) -> None:
        """A retry while attempts remain (at-least-once), else a dead letter."""
        self.stats.incr("failed")
        summary = _summary(exc)
        error = summary.splitlines()[-1]
        if isinstance(exc, Reject):
            log.warning("queue %s: handler rejected %s: %s; dead-lettering", self.queue,
                        env.id, exc)  # fmt: skip
            self.stats.incr("dead_lettered")
            held.move = self.ops.dead_move(held.raw, f"rejected: {exc}"[:2000], self._consumer,
                                           env)  # fmt: skip
            return
        if self.at_least_once and env.attempt < self.settings.max_attempts:
            log.info("queue %s: handler failed on %s attempt %d: %s; retrying", self.queue,
                     env.id, env.attempt, error)  # fmt: skip
            self.stats.incr("retried")
            how = tracked_how(retry_how(self.settings, env.attempt), env, error)
            held.move = held.raw, env.next_attempt().encode(), how
            return
        log.warning("queue %s: handler failed on %s attempt %d: %s; dead-lettering", self.queue,
                    env.id, env.attempt, error)  # fmt: skip
        self.stats.incr("dead_lettered")
        reason = f"handler failed on attempt {env.attempt}: {summary}"
        held.move = self.ops.dead_move(held.raw, reason, self._consumer, env)

    def _record(self, env: Envelope, state: str, *fields: str | int) -> int:
        """Write ``env``'s record (:meth:`QueueOps.record`'s answer; 0 when Redis refused)."""
        try:
            return self.ops.record(env, state, *fields)
        except redis.RedisError as exc:  # the message goes on; only its record lags
            log.warning("queue %s: record of %s not written (%s): %s", self.queue, env.id,
                        state, exc)  # fmt: skip
            return 0

    def write_record(self, held: Held) -> None:
        """At-most-once: write a handled tracked message's record (by the dispatcher)."""
        if held.record is not None and held.env is not None:
            self._record(held.env, "handled", *held.record)

    def _progress_writer(self, env: Envelope) -> Callable[[float, str], bool]:
        def write(fraction: float, text: str) -> bool:
            return self.ops.progress(env, self.name, fraction, text)

        return write


def _discard(awaitable: object) -> None:
    """Close a coroutine nobody will await (no "never awaited" warning; its finally runs)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def _summary(exc: BaseException) -> str:
    """The exception and the last frames of its traceback, bounded (for the dead-letter entry)."""
    frames = traceback.format_exception(exc, limit=-3)
    return "".join(frames).strip()[-2000:]
