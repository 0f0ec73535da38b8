"""A message in a worker's hands, from its claim until it is settled.

The dispatcher (:mod:`consumers.worker`) claims it, a slot (:mod:`consumers.slots`) runs its
handler, and the dispatcher settles it. Who decides its outcome is taken once, by whoever gets
there first (:meth:`Held.decide`): the handler finishing, or the dispatcher giving up on it at
its time limit. ``dict.setdefault`` is atomic in CPython, so neither side takes a lock: a slot
thread that is given up on and interrupted can never leave one held.
"""

from __future__ import annotations

import threading

from consumers.moves import Move
from producer import Envelope

HANDLER, TIME_LIMIT, STALLED = "handler", "time limit", "stalled"
RETURNED, TAKEN_OVER = "returned", "taken over"  # how a run in the dispatcher's thread ended


class Held:
    """One claimed message: what the slot found (``env``, ``started_at``...) and its outcome
    (``move``: an ack, a retry or a dead letter; ``record``: at-most-once fields of a tracked
    message's record, written when it is settled)."""

    __slots__ = (
        "_decided",
        "env",
        "fatal",
        "handled",
        "in_slot",
        "latency_ms",
        "limit_s",
        "marked",
        "move",
        "popped",
        "ran_s",
        "raw",
        "record",
        "started_at",
        "thread",
    )

    def __init__(self, raw: bytes, popped: bool = False) -> None:
        self.raw = raw
        self.popped = popped  # taken by a blocking pop: no claim script wrote its record
        self.marked = False  # noted in bus:{q}:started:<worker> (a redelivered one)
        self.env: Envelope | None = None
        self.started_at = 0.0  # time.monotonic() when its handler started; 0.0: not yet
        self.limit_s = 0.0  # its time limit, once started
        self.ran_s = 0.0  # how long its handler ran
        self.move: Move | None = None
        self.record: list[str | int] | None = None
        self.handled = False
        self.latency_ms: int | None = None
        self.fatal: BaseException | None = None  # a handler's SystemExit & co
        self.thread: threading.Thread | None = None  # the slot thread running it
        self.in_slot = False  # handed to the slots (or adopted by them), not collected yet
        self._decided: dict[str, object] = {}  # "by": the outcome's decider; "slot": taken

    def decide(self, who: str) -> bool:
        """Take the decision on this message's outcome for ``who`` (one of this module's
        constants); False if another had it. Each party asks once: the dispatcher never asks
        for a message whose outcome is decided."""
        return self._decided.setdefault("by", who) is who

    def take(self, slot: object) -> bool:
        """Take this message for ``slot`` (its thread or task) to run; False if another slot
        took it before (it was handed out again with the rest of a batch whose thread was
        given up on)."""
        return self._decided.setdefault("slot", slot) is slot

    def end_inline(self, who: str) -> bool:
        """For a message run in the dispatcher's own thread (:mod:`consumers.inline`): take the
        say on how its run there ended for ``who``: its handler returned (that thread goes on)
        or the watchdog took over (that thread leaves the loop); False if the other had it."""
        return "inline" not in self._decided and self._decided.setdefault("inline", who) is who

    @property
    def taken(self) -> bool:
        return "slot" in self._decided

    @property
    def decided_by(self) -> str | None:
        return self._decided.get("by")  # type: ignore[return-value]

    @property
    def started(self) -> bool:
        return self.started_at > 0.0
