"""What a worker's dispatcher sees of its handlers (:class:`consumers.worker.Worker` is one):
what they finished, taken from the slots' ``done`` line; their time limits, looked at every
:data:`LIMITS_EVERY_S` (one past its limit has failed its attempt, and its slot is freed); the
messages still in their hands; and the slots' state written with the stats (busy, the oldest in
hand and its limit, the handlers given up on that still run).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from queue import Empty, SimpleQueue

from consumers.handling import Handling
from consumers.held import STALLED, TIME_LIMIT, Held
from consumers.slots import Slots
from producer.errors import HandlersStuck
from producer.observe.stats import Stats
from producer.store.envelope import now_ms

log = logging.getLogger("consumers.worker")
LIMITS_EVERY_S = 0.1  # how often the handlers' time limits are checked


class Oversight:
    """The handlers' side of a worker; the attributes are the worker's."""

    queue: str
    concurrency: int
    stats: Stats
    stopping: threading.Event
    handling: Handling
    slots: Slots | None
    _done: SimpleQueue[list[Held]]
    _held: dict[int, Held]
    _finished: list[Held]
    _finished_at: float
    _in_slots: int
    _fatal: BaseException | None
    _limits_at: float

    def _collect(self) -> None:
        """Take what the slots finished; give up on handlers past their time limit."""
        with contextlib.suppress(Empty):
            while True:
                for held in self._done.get_nowait():
                    self._finish(held)
        now = time.monotonic()
        if now - self._limits_at >= LIMITS_EVERY_S:
            self._limits_at = now
            self._check_limits(now)

    def _wait(self, until: float) -> None:
        """Wait for a slot to finish a message, at most until ``until`` (time.monotonic())."""
        timeout = min(until - time.monotonic(), LIMITS_EVERY_S)
        with contextlib.suppress(Empty):
            for held in self._done.get(timeout=max(timeout, 0.001)):
                self._finish(held)
        self._collect()

    def _finish(self, held: Held) -> None:
        if id(held) not in self._held:  # settled already (given up on at exit)
            return
        if held.in_slot:
            held.in_slot = False
            self._in_slots -= 1
        if not self._finished:
            self._finished_at = time.monotonic()
        self._finished.append(held)
        if held.fatal is not None:
            self._finish_fatal(held)

    def _finish_fatal(self, held: Held) -> None:
        if self._fatal is None:
            self._fatal = held.fatal  # settled as a failure; then the process ends
            self.stopping.set()

    def _check_limits(self, now: float) -> None:
        assert self.slots is not None
        for held in self.slots.running():
            if not held.started or now - held.started_at <= held.limit_s:
                continue
            if held.decided_by is not None:  # it finished, or was given up on, already
                continue
            if not held.decide(TIME_LIMIT):  # it finished meanwhile
                continue
            self.handling.timed_out(held, now)
            self._finish(held)
            self.slots.give_up(held)
        for other in self.slots.strands():  # stranded by one given up on: not blamed
            if other.decide(STALLED):
                self.handling.stalled(other)
                self._finish(other)
        if (stuck := self.slots.abandoned) > self.concurrency and self._fatal is None:
            self._fatal = HandlersStuck(
                f"queue {self.queue}: {stuck} handlers given up on at their time limit are "
                f"still running, more than its {self.concurrency} slots: the process must be "
                "restarted to get their threads back"
            )
            log.critical("%s", self._fatal)
            self.stopping.set()

    def _in_hands(self) -> list[Held]:
        """The messages in handlers' hands now (not those given up on)."""
        assert self.slots is not None
        return [h for h in self.slots.running() if h.decided_by is None]

    def on_stats(self) -> None:
        """The slots' state, written with the stats: busy, the oldest in hand, given up on."""
        if self.slots is None:
            return
        running = [h for h in self._in_hands() if h.started]
        oldest = min(running, key=lambda h: h.started_at, default=None)
        self.stats.set_state(
            slots=self.concurrency,
            busy=len(running),
            oldest_started_ms=now_ms() - int((time.monotonic() - oldest.started_at) * 1000)
            if oldest
            else 0,
            oldest_limit_ms=int(oldest.limit_s * 1000) if oldest else 0,
            abandoned=self.slots.abandoned,
        )
