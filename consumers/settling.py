"""How a worker settles what it holds (:class:`consumers.worker.Worker` is one): what finished,
each by its move, in one script that also claims what freed up; a batch whose reply was lost, sent
again as it was, with its token; at exit, also what no handler started (given back unchanged)
and what a handler still holds (as after a crash); after a reconnect, the "ghost pops" its list
holds beyond what it holds (given back unchanged).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import redis

from consumers.handling import Handling
from consumers.held import Held
from consumers.lists import QueueOps
from consumers.moves import Move, give_back_move, plan_give_back, started_move
from producer import Settings
from producer.observe.stats import Stats

log = logging.getLogger("consumers.worker")
STOPPED = "stopped"  # a message still in a handler's hands when the worker exits


class Settling:
    """The settling side of a worker; the attributes are the worker's."""

    settings: Settings
    stats: Stats
    queue: str
    name: str
    processing: str
    at_least_once: bool
    handling: Handling
    ops: QueueOps
    _held: dict[int, Held]
    _finished: list[Held]
    _sending: list[Held] | None
    _settles: int
    _token: str
    _alone: Held | None
    _pace_s: float | None
    _recovered_once: bool
    _unread: Callable[[], list[bytes]] | None  # a script sent, its reply not read yet

    def _settle(self, ops: QueueOps, claim: int = 0, everything: bool = False,
                meanwhile: Callable[[], None] | None = None) -> list[bytes]:  # fmt: skip
        """Settle what finished, each by its move (a batch sent before whose reply was lost
        first, exactly as it was); with ``everything`` (at exit) also what no handler started
        (given back unchanged, oldest next) and what a handler still holds (as after a crash:
        attempt + 1; at-most-once: dead-lettered). With ``claim``, claim up to that many more
        in the same script and return them (at-least-once). ``meanwhile`` is called once, while
        Redis works on that script (before it, when there is none to wait for)."""
        if self._sending is not None and (self._finished or everything):
            self._send(ops, self._sending, 0)  # the lost one alone, with its own token
        if self._sending is None:
            self._sending, self._finished = self._finished, []
            if everything:
                self._sending += self._leftovers()
        return self._send(ops, self._sending, claim, meanwhile)

    def _send(self, ops: QueueOps, batch: list[Held], claim: int,
              meanwhile: Callable[[], None] | None = None) -> list[bytes]:  # fmt: skip
        moves: list[Move] = []
        given_back: list[Move] = []
        unlisted: list[bytes] = []  # at-most-once: taken, never started
        for held in batch:
            if held.move is not None:
                moves.append(held.move)
            elif held.handled:  # at-most-once: nothing to write
                continue
            elif held.decided_by == STOPPED and not held.started:
                if self.at_least_once:
                    given_back.append(give_back_move(held.raw))
                else:
                    unlisted.append(held.raw)
            elif self.at_least_once and not held.handled:  # never decided: as if it crashed
                given_back.append(started_move(held.raw, self.queue, self.name,
                                               self.settings.max_attempts))  # fmt: skip
        given_back.reverse()  # RPUSH newest first: the oldest ends at the consuming end
        # The same token until this batch is settled: a repeat after a lost reply is a no-op
        # if the lost call ran (see producer/store/lua/lib/replay.lua).
        token = f"{self._token}:{self._settles}" if self.at_least_once else ""
        claimed: list[bytes] = []
        dropped = 0
        if self.at_least_once and claim > 0 and meanwhile is not None:
            receive = ops.send_settle_claim(self.name, moves + given_back, claim, token)

            def rest() -> list[bytes]:
                self._unread = None
                _, dropped, claimed = receive()
                return self._sent(batch, dropped, claimed)

            self._unread = rest  # a thread that takes over from this one reads the reply
            meanwhile()
            return rest()
        if meanwhile is not None:
            meanwhile()
        if self.at_least_once and claim > 0:
            _, dropped, claimed = ops.settle_claim(self.name, moves + given_back, claim, token)
        elif moves or given_back:
            consumer = self.name if self.at_least_once else None
            _, dropped = ops.settle(consumer, moves + given_back, token)
        if unlisted:
            ops.give_back(unlisted)
        return self._sent(batch, dropped, claimed)

    def _sent(self, batch: list[Held], dropped: int, claimed: list[bytes]) -> list[bytes]:
        if batch:
            self._settles += 1
        self._sending = None
        self._settled(batch, dropped)
        return claimed

    def _leftovers(self) -> list[Held]:
        """At exit: what is held and not finished, decided as stopped (late results are
        discarded). Not started: given back; in a handler's hands: as after a crash."""
        finished = {id(h) for h in self._finished}
        left = []
        for held in self._held.values():
            if id(held) in finished or held.decided_by is not None:
                continue
            if held.decide(STOPPED):
                if held.started and not self.at_least_once:
                    self.handling.stopped(held)
                left.append(held)
        return left

    def _settled(self, batch: list[Held], dropped: int) -> None:
        """Forget a settled batch; count what it did."""
        handled, latencies, paces, marked = 0, [], [], []
        forget, alone = self._held.pop, self._alone
        for held in batch:
            forget(id(held), None)
            if held is alone:
                self._alone = None
            if held.marked:
                marked.append(held.raw)
            if held.handled:
                handled += 1
                if held.record is not None:
                    self.handling.write_record(held)
            if held.latency_ms is not None:
                latencies.append(held.latency_ms)
            if held.ran_s:
                paces.append(held.ran_s)
        if handled:
            self.stats.incr("handled", handled)
        if latencies:
            self.stats.observe_latencies_ms(latencies)
        if dropped:
            self.stats.incr("dead_dropped", dropped)
        if marked:
            try:
                self.ops.unmark_started(self.name, marked)
            except redis.RedisError as exc:  # cleared with the list's next recovery
                log.info("queue %s: %d settled starts not cleared (%s)", self.queue, len(marked),
                         exc)  # fmt: skip
        if paces:
            pace = sum(paces) / len(paces)
            old = self._pace_s
            self._pace_s = pace if old is None else 0.7 * old + 0.3 * pace

    def _recover(self, ops: QueueOps, everything: bool = False) -> None:
        """Settle what this process finished, then give back whatever else the list holds and
        no handler of this process has: on the first run what a previous process of this name
        left (attempt + 1: its handler may have seen them), later only ghost pops (never
        handled: unchanged)."""
        self._settle(ops, everything=everything)
        if not self.at_least_once and self._recovered_once:
            return  # an at-most-once worker's list is empty: only its first run finds one
        if self._held:  # what handlers still hold stays; anything else is a ghost pop
            requeued, dead = self._give_back_ghosts(ops), 0
        else:
            requeued, dead = ops.recover(self.name, bump=not self._recovered_once)
        self._recovered_once = True
        if requeued or dead:
            self.stats.incr("recovered", requeued)
            self.stats.incr("dead_lettered", dead)
            log.warning(
                "queue %s: requeued %d in-flight messages from %s (%d dead-lettered)",
                self.queue,
                requeued,
                self.processing,
                dead,
            )

    def _give_back_ghosts(self, ops: QueueOps) -> int:
        """Give back, unchanged, what the list holds beyond the messages held here."""
        listed: list[bytes] = ops.client.lrange(self.processing, 0, -1)  # type: ignore[assignment]
        extra = Counter(listed)
        extra.subtract(held.raw for held in self._held.values())
        ghosts = [raw for raw, n in extra.items() for _ in range(n) if n > 0]
        if not ghosts:
            return 0
        moves = plan_give_back(ghosts, self.queue, self.name, False)
        moved, _ = ops.settle(self.name, moves)
        return moved
