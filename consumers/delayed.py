"""The worker's side of ``bus:{q}:delayed``: the mover that makes due messages pending, and the
retry policy that sends a failed message there for a backoff.

Producers put delayed messages in the zset (:meth:`producer.Producer.push` with ``delay_s`` or
``not_before``); every worker of the queue runs a :class:`Mover`. Each pass is one script
(:meth:`consumers.lists.QueueOps.move_due`), so movers of several workers never move a message
twice, and a message is pending within ``BUS_MOVER_INTERVAL_S`` of its due time.
"""

from __future__ import annotations

import logging

import redis

from consumers.lists import QueueOps
from consumers.moves import RETRY, retry_later
from consumers.scheduler import Scheduler
from producer import Settings
from producer.observe.stats import Flusher

log = logging.getLogger(__name__)


class Mover:
    """A thread that makes ``ops``'s due delayed messages pending every ``interval_s``, tells
    the messages that wait for its queue's ones what finished and sweeps its waiting ones
    (:mod:`producer.store.after`), and fires the queue's periodic schedules (``scheduler``,
    :mod:`consumers.scheduler`)."""

    def __init__(
        self, ops: QueueOps, interval_s: float, scheduler: Scheduler | None = None
    ) -> None:
        self.ops = ops
        self.scheduler = scheduler
        self._thread = Flusher(interval_s, self.move, name=f"mover-{ops.queue}")
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop; no pass runs or is running once this returns."""
        self._thread.stop()

    def move(self) -> None:
        """One pass; a Redis error is said once until a pass works again."""
        try:
            moved = self.ops.move_due()
            self.ops.resolve_waiting()
            if self.scheduler is not None:
                self.scheduler.fire()
        except redis.RedisError as exc:  # Redis away: the worker's reconnect loop logs more
            if not self._failing:
                log.info("queue %s: delayed messages not moved, schedules not fired (%s); will "
                         "retry", self.ops.queue, exc)  # fmt: skip
            self._failing = True
            return
        self._failing = False
        if moved:
            log.debug("queue %s: %d delayed messages are due, now pending", self.ops.queue, moved)


def retry_how(settings: Settings, attempt: int) -> str:
    """How a message whose ``attempt`` failed is retried: at once (the back of the line), or
    after ``BUS_RETRY_BACKOFF_S`` doubled per attempt, capped at ``BUS_RETRY_BACKOFF_CAP_S``,
    through the delayed zset."""
    base = settings.retry_backoff_s
    if not base:
        return RETRY
    delay_s = min(base * 2 ** (attempt - 1), settings.retry_backoff_cap_s)
    return retry_later(int(delay_s * 1000))
