"""The worker's side of tracked messages (:mod:`producer.store.tracking`): what a handler receives
to report progress, and the result it returns, checked before it goes into the record.

A handler that takes a second positional parameter receives a :class:`Context`; the plain
one-argument handler keeps working and never sees one::

    def render(env, ctx):
        for i, page in enumerate(pages):
            draw(page)
            ctx.report_progress((i + 1) / len(pages), f"page {i + 1} of {len(pages)}")
        return {"pages": len(pages)}       # the record's result (JSON, bounded)
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis

from producer import Envelope
from producer.store.envelope import _ENCODER

log = logging.getLogger(__name__)
PROGRESS_TEXT_MAX = 200  # characters of a progress text kept (longer ones are cut)
PROGRESS_EVERY_S = 0.1  # at most this often to Redis; the last report before the end is kept


class Context:
    """What a handler may use besides the envelope: who runs it, and progress reporting.

    ``report_progress`` writes to the message's record only when the message is tracked (see
    :attr:`tracked`); otherwise it does nothing and returns False. A report less than
    :data:`PROGRESS_EVERY_S` after the last one written is skipped (unless it says 1.0), so a
    handler may report in a tight loop at the cost of one round trip per 0.1 s.
    """

    __slots__ = ("_ask", "_asked_at", "_cancelled", "_every_s", "_last_at", "_results", "_write",
                 "envelope", "queue", "reports", "worker")  # fmt: skip

    def __init__(self, envelope: Envelope, queue: str, worker: str,
                 write: Callable[[float, str], bool],
                 ask: Callable[[], bool] | None = None,
                 results: Callable[[], list[Any]] | None = None) -> None:  # fmt: skip
        self.envelope = envelope
        self.queue = queue
        self.worker = worker
        self._write = write
        self._ask = ask  # whether the message was cancelled (its record asks it to stop)
        self._results = results  # the results of the messages it waited for
        self._asked_at = -math.inf
        self._cancelled = False
        self._last_at = -math.inf
        self._every_s = PROGRESS_EVERY_S
        self.reports: list[tuple[float, str]] = []  # kept by for_tests() contexts only

    @classmethod
    def for_tests(cls, envelope: Envelope, queue: str = "default", worker: str = "test",
                  results: list[Any] | None = None) -> Context:  # fmt: skip
        """A context that needs no Redis, to call a handler in a unit test: each progress
        report is appended to :attr:`reports` as ``(fraction, text)``, every one of them (no
        0.1 s spacing), for a tracked envelope only (an untracked one's reports go nowhere,
        as in a worker); :meth:`results` returns ``results`` (default: [])."""
        reports: list[tuple[float, str]] = []

        def keep(fraction: float, text: str) -> bool:
            reports.append((fraction, text))
            return True

        given = list(results or [])
        ctx = cls(envelope, queue, worker, keep, results=lambda: given)
        ctx.reports = reports
        ctx._every_s = 0.0
        return ctx

    @property
    def attempt(self) -> int:
        """Which delivery of the message this is (1: the first)."""
        return self.envelope.attempt

    @property
    def tracked(self) -> bool:
        """The message has a status record (its envelope says ``"track": true``)."""
        return self.envelope.track

    @property
    def cancelled(self) -> bool:
        """True once the message was cancelled while this handler runs (``Producer.cancel``,
        ``DELETE /api/messages/<id>``, ``python -m consumers message cancel <id>``). A handler
        that can stop early looks now and then and stops (returns, or raises): either way the
        attempt is not retried, and unless it returns its record says ``cancelled``. Looked up
        in Redis at most every 0.1 s; always False for an untracked message (only tracked ones
        can be cancelled) and when Redis cannot say."""
        if self._cancelled or not self.tracked or self._ask is None:
            return self._cancelled
        now = time.monotonic()
        if now - self._asked_at >= self._every_s:
            self._asked_at = now
            try:
                self._cancelled = self._ask()
            except redis.RedisError as exc:
                log.info("queue %s: whether %s was cancelled is not known: %s", self.queue,
                         self.envelope.id, exc)  # fmt: skip
        return self._cancelled

    def results(self) -> list[Any]:
        """The results of the messages this one waited for (pushed with ``after``, or the
        callback of a group, the next step of a chain), in the order ``after`` named them: each
        handler's JSON return value (None when it returned nothing or its result was not
        stored). [] for a message pushed without ``after``. Read from their records when
        called (one round trip per node); raises LookupError when one has no record any more
        (``BUS_RESULT_TTL_S`` passed) or is not handled (a dead letter requeued by hand), and
        ``redis.RedisError`` when Redis cannot say."""
        return [] if self._results is None else self._results()

    def report_progress(self, fraction: float, text: str = "") -> bool:
        """Say how far the handler got: ``fraction`` from 0 to 1 and a short ``text`` (cut at
        200 characters). True when written to the record; False when skipped (the last one
        written is less than 0.1 s old), when the message is not tracked, or when Redis could
        not take it (the message itself is not affected). Raises ValueError for a fraction
        outside [0, 1]."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
        if not 0.0 <= fraction <= 1.0:  # NaN fails this too
            raise ValueError(f"progress must be from 0 to 1, got {fraction!r}")
        if not self.tracked:
            return False
        now = time.monotonic()
        if now - self._last_at < self._every_s and fraction < 1.0:
            return False
        self._last_at = now
        try:
            return self._write(float(fraction), str(text)[:PROGRESS_TEXT_MAX])
        except redis.RedisError as exc:  # the settle that follows reports the link's trouble
            log.info("queue %s: progress of %s not written: %s", self.queue, self.envelope.id, exc)
            return False


def takes_context(handler: Callable[..., object]) -> bool:
    """Whether ``handler`` takes a second positional argument (then it gets a :class:`Context`)."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the plain form
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return sum(1 for p in params if p.kind in positional) >= 2


def encode_result(value: Any, max_bytes: int) -> tuple[bytes, str]:
    """The handler's return value as JSON for the record, and why it was not stored ("" when it
    was, or when there is nothing to store: None)."""
    if value is None:
        return b"", ""
    try:
        data = _ENCODER.encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        return b"", f"the handler returned a {type(value).__name__}, not JSON ({exc}): not stored"
    if len(data) > max_bytes:
        return b"", (
            f"the handler's result is {len(data)} bytes of JSON, over BUS_RESULT_MAX_BYTES "
            f"({max_bytes}): not stored"
        )
    return data, ""
