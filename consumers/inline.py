"""Handlers that take next to nothing run in the worker's own thread, while Redis works.

Handing a message to a slot thread costs more than a handler that does next to nothing. So when
the handlers' measured pace is under :data:`ONE_BATCH_S` (a plain function, not ``async def``),
the dispatcher queues what it claims and runs it itself, in claim order, as a single slot would,
while its next round trip is out: at-least-once, the script that settles the batch before and
claims the next is sent first and its reply read after the run; at-most-once, the next take goes
out when :data:`TAKE_LEAD` of the batch are left (as many as keep what the worker holds within
its bound). The slots stay for the rest:

- a handler that took :data:`FLUSH_AFTER_S` or more sends the rest of the batch to the slots (the
  pace was out of date);
- a handler still running after :data:`INLINE_GRACE_S` has the dispatcher's work taken over by a
  new thread (:meth:`consumers.daemon.Daemon.hand_over`, started by a watchdog thread), which
  first reads the reply the old one was waiting for: the message counts as one in a slot's hands
  from then on (its time limit applies; it may be given up on, which counts its thread as
  abandoned), the rest of the batch goes to the slots, and the old thread, once its handler
  returns, reports the message as a slot would and leaves the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import NoReturn

from consumers.daemon import Demoted
from consumers.handling import Handling
from consumers.held import RETURNED, TAKEN_OVER, TIME_LIMIT, Held
from consumers.lists import QueueOps
from consumers.slots import FLUSH_AFTER_S, Slots
from producer import Settings
from producer.errors import TimeLimitExceeded

log = logging.getLogger("consumers.worker")
ONE_BATCH_S = 0.00005  # handlers faster than this run in the dispatcher (a switch costs more)
INLINE_GRACE_S = 0.05  # one still running after this long: a new thread takes the dispatcher's
TAKE_LEAD = 32  # at-most-once, run here: the next take goes out while this many are left
WATCH_EVERY_S = 0.02  # how often the watchdog looks while handlers may run inline


class Inline:
    """Running fast handlers in the dispatcher's thread; the attributes are the worker's."""

    queue: str
    name: str
    handling: Handling
    slots: Slots | None
    stopping: threading.Event
    finished: threading.Event
    _done: SimpleQueue[list[Held]]
    _pace_s: float | None
    _fatal: BaseException | None
    _finished: list[Held]
    _finished_at: float
    _finish_fatal: Callable[[Held], None]
    _held: dict[int, Held]
    _in_slots: int
    _submit: Callable[[list[Held]], None]
    _queued: list[Held]
    _unread: Callable[[], list[bytes]] | None
    concurrency: int
    settings: Settings
    ops: QueueOps
    _settle: Callable[..., list[bytes]]
    _ahead: Callable[[], int]
    _hand_out: Callable[..., None]
    mark_serving: Callable[[], None]
    hand_over: Callable[[], threading.Thread]
    leader: threading.Thread | None

    def _init_inline(self) -> None:
        # What the dispatcher runs now, read by the watchdog: the batch, and the message.
        self._inline_batch: list[Held] = []
        self._inline_held: Held | None = None
        self._orphans: tuple[Held, list[Held]] | None = None  # left by a thread taken over from
        self._baton = threading.Lock()  # one takeover at a time
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.name}",
                                          daemon=True)  # fmt: skip

    def _inline_pays(self, async_handler: bool) -> bool:
        """Run the next batch here (handlers this fast cost less than a switch)?"""
        return not async_handler and self._pace_s is not None and self._pace_s < ONE_BATCH_S

    def _run_queued(self) -> None:
        """Run what is queued here (taken off the queue only now: if what comes before it
        fails, a broken link say, it is still queued for the next round)."""
        queued, self._queued = self._queued, []
        self._run_inline(queued)

    def _run_inline(self, helds: list[Held], then: Callable[[], None] | None = None,
                    lead: int = 0) -> None:  # fmt: skip
        """Run ``helds`` here, in order, as a slot would; call ``then`` once, when ``lead`` of
        them are left to run (not if the run ends before: stopping, or the rest went to the
        slots)."""
        slots = self.slots
        assert slots is not None
        run, finished = self.handling.run, self._finished
        if self._in_slots:  # the slots hold some: these go after them, in order (and never
            for held in helds:  # more at once than they have)
                self._submit([held])
            return
        self._inline_batch = helds
        at = max(len(helds) - lead, 0) if then is not None else -1
        for i, held in enumerate(helds):
            if slots.closing or self._fatal is not None:
                break  # left unstarted: given back at exit
            if i == at and then is not None:
                try:
                    then()
                except BaseException:  # (a link broken): these are still to run, first
                    self._queued[:0] = helds[i:]
                    raise
            self._inline_held = held  # for the watchdog (the slots never see this batch but
            # from it, what this thread never started: no Held.take here)
            try:
                run(held)
            except TimeLimitExceeded:  # given up on, after the handler returned: decided
                pass
            except Exception:  # a bug of the worker's: settled as if it crashed
                log.exception("queue worker %s: running a handler failed", self.name)
            if not held.end_inline(RETURNED):
                self._demoted(held)
            if not finished:
                self._finished_at = time.monotonic()
            finished.append(held)
            if held.fatal is not None:
                self._finish_fatal(held)
                slots.closing = True
                break
            if held.ran_s >= FLUSH_AFTER_S:  # no longer that fast: the rest to the slots
                for other in helds[i + 1 :]:
                    self._submit([other])
                break
        self._inline_held = None

    def _take_orphans(self) -> None:
        """In a thread that took over: the message its predecessor is held up in counts as one
        in the slots' hands (it holds one of their places), and the rest of that batch goes to
        them."""
        if self._orphans is None:
            return
        held, rest = self._orphans
        self._orphans = None
        held.in_slot = True
        self._in_slots += 1
        for other in rest:
            self._submit([other])

    def _demoted(self, held: Held) -> NoReturn:
        """The watchdog took over while ``held`` ran: report it as a slot would, and leave."""
        assert self.slots is not None
        self.slots.release(held)  # (adopted before the watchdog took the say)
        if held.decided_by != TIME_LIMIT:
            self._done.put([held])
        raise Demoted

    def _run_taking(self, backlog: bool) -> bool:
        """At-most-once, handlers run in this thread: settle what finished, run what is queued
        and, under a backlog, take the next ones while the last TAKE_LEAD of these run: as many
        as keeps what the worker holds within its bound (what a crash loses). Returns whether
        the take came back full (the backlog goes on)."""
        self._settle(self.ops)  # (what is queued stays queued if this fails)
        queued, self._queued = self._queued, []
        asked = 0

        def take() -> None:
            nonlocal asked
            working = len(self._held) - len(self._finished)
            asked = min(self.settings.batch_size, self.concurrency + self._ahead() - working)
            if asked > 0:
                receive = self.ops.send_take(asked)

                def rest() -> list[bytes]:
                    self._unread = None
                    return receive()

                self._unread = rest  # a thread that takes over from this one reads the reply

        self._run_inline(queued, take if backlog else None, TAKE_LEAD)
        if self._unread is None:  # no take sent
            return backlog
        got = self._unread()
        if got:
            self.mark_serving()
        self._hand_out(got)
        return len(got) == asked

    def _watch(self) -> None:
        """The watchdog: has a new thread take the loop over from a dispatcher held up in a
        handler for INLINE_GRACE_S."""
        while not self.finished.wait(WATCH_EVERY_S if self._inline_pays(False) else 0.25):
            held = self._inline_held
            if held is None or not held.started:
                continue
            if time.monotonic() - held.started_at < INLINE_GRACE_S:
                continue
            assert self.slots is not None
            with self._baton:
                held.thread = self.leader  # the thread it runs in
                self.slots.adopt(held)  # first: once it has lost the say, its thread releases it
                if not held.end_inline(TAKEN_OVER):
                    self.slots.release(held)  # it returned meanwhile
                    continue
                self._inline_held = None
                batch = self._inline_batch
                self._orphans = held, batch[batch.index(held) + 1 :]
                self.hand_over()
            log.info("queue %s: a handler still running after %g s held up the worker's "
                     "thread: another took over", self.queue, INLINE_GRACE_S)  # fmt: skip
