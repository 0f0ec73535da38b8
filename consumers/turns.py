"""``worker --ordered --queue high --queue default --queue low``: a worker's queues served in
the order given, as ``rq worker high default low`` does (:class:`consumers.worker.Worker` is
one of these).

Each queue keeps a worker loop of its own (its processing list, lease, recovery and settle stay
per queue), and two rules join them: a queue's loop takes nothing while a queue before it has
messages pending, at any priority level (one read of those queues, on the admin client: on a
cluster they may live on other nodes); and the loops share one set of ``--concurrency`` slots:
the messages in the others' hands count against each one's room. A loop waiting for its turn,
or for a slot the others hold, looks again every :data:`TURN_WAIT_S`. An idle loop waits in
Redis on its own queue (a blocking pop); a message it gets while a queue before it has filled
meanwhile is given back unchanged, to the front of its queue, before any handler sees it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from consumers.lists import QueueOps
from consumers.moves import give_back_move
from producer import keys

TURN_WAIT_S = 0.05  # a queue waiting for its turn, or for a slot, looks again this often


class Turns:
    """The ``--ordered`` rules of one worker loop; the attributes below are the worker's."""

    admin: redis.Redis
    ops: QueueOps
    name: str
    at_least_once: bool
    concurrency: int
    _finished: Sequence[object]
    _queued: Sequence[object]

    def _init_turns(self, after_queues: Sequence[str]) -> None:
        self._first = tuple(after_queues)  # the queues served before this one
        self._peers: tuple[Turns, ...] = ()  # the loops of the other queues

    def share_slots(self, peers: Sequence[Turns]) -> None:
        """Serve this queue with the same ``--concurrency`` slots as ``peers`` (the loops of
        the other queues, in this process)."""
        self._peers = tuple(p for p in peers if p is not self)

    def in_hand(self) -> int:
        """Messages claimed and not finished (read by the peers' threads: a moment's count)."""
        raise NotImplementedError  # the worker's

    def _wait(self, until: float) -> None:
        raise NotImplementedError  # the worker's: wait for a slot to finish, at most until

    def _take_turn(self, room: int, idle_slots: int, working: int, ahead: int,
                   backlog: bool) -> tuple[int, int, bool]:  # fmt: skip
        """The loop's ``room`` and ``idle_slots`` under the rules, and whether it waited (it
        has nothing to do but wait for its turn or a slot: it loops again)."""
        if self._peers:
            others = sum(p.in_hand() for p in self._peers)
            room = min(room, self.concurrency + ahead - working - others)
            idle_slots = min(idle_slots, self.concurrency - working - others)
        nothing_else = not self._finished and not self._queued
        if self._peers and idle_slots <= 0 and working == 0 and nothing_else:
            self._wait(time.monotonic() + TURN_WAIT_S)  # the others hold every slot
            return room, idle_slots, True
        if room > 0 and self._first and (backlog or idle_slots > 0) and self._later_turn():
            if nothing_else:
                self._wait(time.monotonic() + TURN_WAIT_S)
                return 0, 0, True
            return 0, 0, False  # settle what finished meanwhile; claim nothing
        return room, idle_slots, False

    def _not_yet(self, raw: bytes) -> bool:
        """After a blocking pop: if a queue before this one has messages pending now (it
        filled while this one waited), give ``raw`` back unchanged, to the front of its queue,
        and say so; else False (hand it out)."""
        if not self._later_turn():
            return False
        if self.at_least_once:  # in this worker's list: moved back by a settle
            self.ops.settle(self.name, [give_back_move(raw)])
        else:  # taken (and counted): put back, the count with it
            self.ops.give_back([raw])
        return True

    def _later_turn(self) -> bool:
        """Whether a queue served before this one has messages pending (any priority level).
        A Redis error says no: the claim that follows meets the same error."""
        pipe = self.admin.pipeline(transaction=False)
        for q in self._first:
            pipe.llen(keys.pending(q))
            pipe.exists(keys.levels_gate(q))
        try:
            return any(int(n) for n in pipe.execute())
        except redis.RedisError:
            return False
