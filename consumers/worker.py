"""The queue worker: takes ``bus:{q}:pending`` from the tail (FIFO) and runs a handler on each
message, up to ``BUS_CONCURRENCY`` at once.

One dispatcher thread alone talks to Redis on the worker's connection; the handlers run in
slots (a pool of threads for a plain function, :mod:`consumers.slots`; one event loop for an
``async def``, :mod:`consumers.loop_slots`), or in the dispatcher's own thread for a plain
function that takes next to nothing (:mod:`consumers.inline`). The dispatcher claims messages,
hands them to the slots in claim order, and settles each one when its own handler finished:
never before.

``at-least-once`` (default): claim the oldest messages into this worker's own processing list
(BLMOVE while the queue is empty; a Lua claim under a backlog), then settle in one script what
finished (ack what was handled, requeue a failure with attempt + 1 up to ``max_attempts``, then
dead-letter it) and claim what frees up: one round trip per batch. Everything in hand is in the
processing list. A worker holds at most ``concurrency`` messages in its handlers' hands plus
what its slots will start within about :data:`AHEAD_S` at the pace they go (at least one; at
most :data:`AHEAD_BATCHES` claims of ``batch_size``, one at-most-once), so a busy worker does
not hoard a backlog that idle ones could take, and a fast one claims while its slots work.
Garbage is dead-lettered, raw bytes kept.

A handler past its time limit (``BUS_HANDLER_TIMEOUT_S``, or the message's ``timeout_s``) has
failed its attempt: it is settled so at once, its slot freed for the next message, and its late
result, if it ever comes, discarded. A worker left with more such handlers still running than it
has slots exits 76 so that its supervisor (``--processes``) starts a fresh process.

A crash or a broken link leaves claimed messages in the processing list, never nowhere. After a
reconnect the worker settles what finished, keeps what its handlers still hold, and gives back
unchanged whatever else its list holds (a "ghost pop": a move Redis made for a connection that
was already gone); on start, what a previous process of the same name left goes back with
attempt + 1 (its handler may have seen them). See :mod:`consumers.membership` for the name's
lease and the reaper.

``at-most-once``: BRPOP (RPOP with a count under a backlog); the messages in hand are lost if
the process dies. A handler exception or a time limit dead-letters the message (it is never
delivered twice).

stop() takes back what no handler started (given back unchanged), waits up to
``BUS_STOP_TIMEOUT_S`` for the handlers in hand, and releases a blocked pop at once; a handler
still running then is settled as after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import time
from collections.abc import Callable, Sequence

import redis

from consumers import schedules as schedule_file
from consumers.daemon import Demoted
from consumers.delayed import Mover
from consumers.handlers import Handler
from consumers.handling import Handling, is_async
from consumers.held import Held
from consumers.inline import ONE_BATCH_S, Inline
from consumers.loop_slots import LoopSlots
from consumers.membership import QueueMember
from consumers.oversight import Oversight
from consumers.pinning import PinnedLink
from consumers.scheduler import Scheduler
from consumers.schedules import Schedule
from consumers.settling import Settling
from consumers.slots import Slots, ThreadSlots
from consumers.turns import Turns
from producer import Settings, keys, make_client
from producer.connection.cluster import ClusterClient
from producer.observe.stats import Stats
from producer.store.envelope import report_ignored_fields_to

log = logging.getLogger(__name__)
AHEAD_S = 0.05  # a worker claims ahead what its slots start within about this long
AHEAD_BATCHES = 3  # ... and at most this many claims of BUS_BATCH_SIZE (at-least-once)
SETTLE_AFTER_S = 0.05  # a finished message waits at most about this long to be settled
BUSY_BLOCK_S = 0.05  # a blocking pop while some handlers run: they are looked at this often
ATTEMPT = re.compile(rb'"attempt"\s*:\s*(\d{1,9})')


class Worker(PinnedLink, Settling, Inline, Oversight, QueueMember, Turns):
    """Consumes one queue with one handler, ``settings.concurrency`` messages at a time."""

    role = "worker"

    def __init__(self, settings: Settings, queue_name: str, name: str, handler: Handler,
                 schedules: Sequence[Schedule] | None = None,
                 after_queues: Sequence[str] = ()) -> None:  # fmt: skip
        labels = {
            "queue": queue_name,
            "delivery": settings.delivery,
            "name": name,
            "heartbeat_ttl_ms": str(int(settings.heartbeat_ttl_s * 1000)),
        }
        scope = {"queue": queue_name, "delivery": settings.delivery}
        super().__init__(settings, queue_name, name, Stats("worker", f"{queue_name}:{name}",
                                                            labels, scope))  # fmt: skip
        self.concurrency = settings.concurrency
        self.client = self._router = make_client(settings, "worker", name)
        self.ops = self._ops(self.client)
        self._pinned = False  # self.client holds one connection (see _pin)
        self._on_cluster = isinstance(self._router, ClusterClient)
        self.pending = keys.pending(queue_name)
        self.processing = keys.processing(queue_name, name)
        self.at_least_once = settings.delivery == "at-least-once"
        self.handling = Handling(settings, queue_name, name, handler, self.admin_ops, self.stats)
        self._async = is_async(handler)
        self._done: queue.SimpleQueue[list[Held]] = queue.SimpleQueue()
        self.slots: Slots | None = None  # made by run()
        # Every message claimed and not settled yet, in claim order, by identity: two identical
        # envelopes are two messages.
        self._held: dict[int, Held] = {}
        self._finished: list[Held] = []  # their outcome is decided: to settle
        self._finished_at = 0.0  # when the oldest of them finished
        self._sending: list[Held] | None = None  # a settle sent, its reply not seen yet
        self._unread: Callable[[], list[bytes]] | None = None  # ... sent, its reply not read
        self._queued: list[Held] = []  # claimed, to run in this thread (consumers.inline)
        self._in_slots = 0  # handed to the slots and not collected yet
        self._stop_at = 0.0  # when stop() was called (time.monotonic())
        self._pace_s: float | None = None  # how long handlers take, smoothed
        self._alone: Held | None = None  # past its last attempt: runs with nothing else
        self._alone_waits = False  # ... and waits for the others to finish
        self._limits_at = 0.0
        self._fatal: BaseException | None = None  # a handler's SystemExit & co, re-raised
        self._uncounted = 0  # at-most-once: taken by a blocking pop, whose count failed
        self._settles = 0  # batches settled: with the token, each settle's own token
        self._recovered_once = False  # what a previous process left is recovered
        # Delayed messages: every mover_interval_s the due ones become pending (any worker's
        # mover may move any of them; one script each time, so never twice).
        # Its queue's periodic schedules (None: those of BUS_SCHEDULE_FILE), fired by the mover.
        found = schedule_file.load(settings) if schedules is None else schedules
        scheduler = Scheduler(self.admin, queue_name, found, settings)
        self._mover = Mover(self.admin_ops, settings.mover_interval_s,
                            scheduler if scheduler.schedules else None)  # fmt: skip
        self._init_turns(after_queues)  # --ordered (consumers.turns)
        self._init_inline()

    def run(self) -> None:
        """The daemon's loop, with the handlers' slots and the delayed messages' mover."""
        n, done, name = self.concurrency, self._done, self.name

        def setup() -> None:  # each handler thread reports the fields its decodes ignored
            report_ignored_fields_to(self.fields_ignored)

        self.slots = (LoopSlots(n, self.handling.run_async, done, name, setup) if self._async
                      else ThreadSlots(n, self.handling.run, done, name, setup))  # fmt: skip
        self._mover.start()
        self._watchdog.start()
        super().run()

    def _loop(self) -> None:
        if self.stopping.is_set() and self._held:  # taken over (see consumers.inline) while
            with contextlib.suppress(redis.RedisError):  # stopping: wind down here; on_exit
                self._wind_down()  # settles what this could not
        super()._loop()

    def on_end(self) -> None:
        self._mover.stop()
        if self.slots is not None:
            self.slots.close()

    def serve(self) -> None:
        """Settle what this process finished, recover what else its list holds, then claim,
        hand out and settle until stopped."""
        self._pin()
        self._take_orphans()  # taken over from a thread held up in a handler (consumers.inline)
        if self._unread is not None:  # ... while a reply was awaited
            self._hand_out(self._unread())
        self._heartbeat()  # takes the name's lease first: one process per name
        if self.stopping.is_set():
            return
        self._recover(self.ops)
        self.mark_connected()
        backlog = True  # there may be one already
        looped_at = time.monotonic()
        while not self.stopping.is_set() and self._fatal is None:
            if not self.leads():  # (never while it serves: a takeover waits for a handler)
                raise Demoted
            if time.monotonic() - looped_at > self.settings.heartbeat_ttl_s / 2:
                # The process stood still (SIGSTOP, a stalled host): the reapers may have
                # taken it for dead. Registered again before it claims into its list.
                self._heartbeat()
            looped_at = time.monotonic()
            self._collect()
            working = len(self._held) - len(self._finished) - len(self._sending or ())
            ahead = self._ahead()
            room = self.concurrency + ahead - working
            idle_slots = self.concurrency - working
            if self._alone is not None:  # nothing more until it is settled
                if working == 1 and self._alone_waits:
                    self._alone_waits = False
                    self._submit([self._alone])
                room = idle_slots = 0
            # Claim under a backlog once half the room is free (or a slot idles); settle what
            # finished once a slot idles or it waited SETTLE_AFTER_S; else wait in Redis for
            # a message while slots are free, or for a handler to finish while none is.
            half = (self.concurrency + ahead) // 2
            stale = self._finished_at + SETTLE_AFTER_S <= time.monotonic()
            if self._first or self._peers:  # --ordered (consumers.turns)
                room, idle_slots, waited = self._take_turn(room, idle_slots, working, ahead,
                                                           backlog)  # fmt: skip
                if waited:
                    backlog = True
                    continue
            if self._queued and not self.at_least_once:
                backlog = self._run_taking(backlog)
            elif backlog and room > 0 and (idle_slots > 0 or room >= half):
                claim = min(room, self.settings.batch_size)
                backlog = len(self._exchange(claim)) == claim
            elif self._finished and (idle_slots > 0 or stale):
                backlog = len(self._exchange(max(room, 0))) == room > 0
            elif self._queued:
                self._exchange(0)
            elif idle_slots > 0:  # the queue looked empty: wait in Redis for the next one
                block = self.settings.block_timeout_s if working == 0 else BUSY_BLOCK_S
                raw = self._blocking_pop(block)
                self.mark_serving()
                if raw is not None and self._first and self._not_yet(raw):
                    backlog = True  # --ordered: given back, a queue before this one first
                elif raw is not None:
                    self._hand_out([raw], popped=True)
                    backlog = True  # the first of a new backlog, perhaps
                elif (
                    working == 0
                    and self.at_least_once
                    and self._token_held
                    and (self.client.llen(self.processing))
                ):
                    # Idle, holding nothing, yet the list is not empty: a pop that Redis
                    # served to a connection we had dropped landed after our recovery.
                    self._recover(self.ops)
            else:  # every slot is busy: wait for one to finish
                now = time.monotonic()
                self._wait(self._finished_at + SETTLE_AFTER_S if self._finished else now + 0.5)
        self._wind_down()

    def _wind_down(self) -> None:
        """Stopping: what no handler started goes back unchanged (at exit); wait up to
        BUS_STOP_TIMEOUT_S for the handlers in hand, then settle what finished."""
        assert self.slots is not None
        self.slots.closing = True
        # From the stop (a thread that took over winds down later than the signal came).
        deadline = (self._stop_at or time.monotonic()) + self.settings.stop_timeout_s
        while self._in_hands() and time.monotonic() < deadline:
            self._wait(deadline)
        if (self._finished or self._sending) and self._token_held:  # else the list is another's
            self._settle(self.ops)
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            raise fatal

    def in_hand(self) -> int:
        """Messages claimed and not finished (read by --ordered peers' threads: a moment's
        count)."""
        return len(self._held) - len(self._finished) - len(self._sending or ())

    def _ahead(self) -> int:
        """How many messages to hold beyond the slots: what they start within AHEAD_S."""
        pace = self._pace_s
        if pace is None:
            return 1
        ahead = int(self.concurrency * AHEAD_S / pace) if pace > 0 else self.settings.batch_size
        # At-least-once what it holds is safe in its list: up to three claims in flight keep
        # the slots busy while Redis settles; at-most-once what it holds is what a crash loses.
        most = self.settings.batch_size * (AHEAD_BATCHES if self.at_least_once else 1)
        return max(1, min(ahead, most))

    def _hand_out(self, raws: list[bytes], popped: bool = False) -> None:
        """Give the slots what was claimed, in claim order. A message past its last attempt (a
        crash hit it among others, see consumers.moves.plan_give_back) waits until nothing
        else is in hand, and runs alone."""
        helds = [Held(raw, popped) for raw in raws]
        for held in helds:
            self._held[id(held)] = held
        if len(raws) == 1 and self._past_last_attempt(raws[0]):
            self._alone, self._alone_waits = helds[0], True
            log.warning("queue %s: a message past its last attempt runs alone (a crash hit it "
                        "with others in hand)", self.queue)  # fmt: skip
        elif self._inline_pays(self._async):
            self._queued += helds  # handlers that take almost no time: run in this thread
        elif self._async and self._pace_s is not None and self._pace_s < ONE_BATCH_S:
            self._submit(helds)  # ... or, async, in one batch
        else:
            for held in helds:
                self._submit([held])

    def _submit(self, batch: list[Held]) -> None:
        assert self.slots is not None
        for held in batch:
            held.in_slot = True
        self._in_slots += len(batch)
        self.slots.submit(batch)

    def _past_last_attempt(self, raw: bytes) -> bool:
        """Its envelope's attempt is past BUS_MAX_ATTEMPTS (read as the claim script reads it:
        the handler's thread decodes it)."""
        most = self.settings.max_attempts
        if not self.at_least_once or not most:
            return False
        found = ATTEMPT.search(raw)
        return found is not None and int(found.group(1)) > most

    def _exchange(self, claim: int) -> list[bytes]:
        """Settle what finished and claim up to ``claim`` more (one script at-least-once);
        hand them out. What is queued to run in this thread runs while Redis works."""
        run = self._run_queued if self._queued else None
        if self.at_least_once:
            got = self._settle(self.ops, claim, meanwhile=run)
        else:
            self._settle(self.ops)
            if run is not None:
                run()
            got = self.ops.take(claim) if claim > 0 else []
        if got:  # (a script may run where a plain write is refused: out of memory)
            self.mark_serving()
        self._hand_out(got)
        return got

    def stop(self) -> None:
        """Stop claiming; finish the messages in hand (up to BUS_STOP_TIMEOUT_S)."""
        self._stop_at = self._stop_at or time.monotonic()
        super().stop()
        if self.slots is not None:
            self.slots.closing = True  # no slot starts another message
        self._done.put([])  # wakes the dispatcher

    @property
    def handler(self) -> Handler:
        return self.handling.handler

    @handler.setter
    def handler(self, handler: Handler) -> None:
        """Replace the handler (before :meth:`run`: a plain function stays one)."""
        self.handling.set_handler(handler)

    def on_exit(self) -> None:
        """Leave nothing behind: settle and give back anything still claimed, then leave the
        registry."""
        try:
            if self._token_held:
                if self.slots is not None:
                    self._collect()  # what finished is settled by its outcome
                self._recover(self.admin_ops, everything=True)
                self.admin.zrem(keys.consumers(self.queue), self.name)
                self.admin.delete(keys.settled(self.queue, self.name))  # all is settled
                self.admin_ops.release_name(self.name, self._token)
        except redis.RedisError as exc:
            log.warning(
                "queue %s: could not clean up on exit (%s); the reaper will", self.queue, exc
            )
