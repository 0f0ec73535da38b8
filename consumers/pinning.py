"""The dispatcher's own link to Redis (:class:`consumers.worker.Worker` is one of these): a
client pinned to one connection, the blocking pop it waits in while the queue is empty, and
what a reconnect drops. Everything else a worker sends goes on its pooled admin client."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from consumers.lists import QueueOps
from producer import Settings
from producer.connection.client import drop_connections, pinned_client

log = logging.getLogger(__name__)


class PinnedLink:
    """The dispatcher's client; the attributes below are the worker's."""

    queue: str
    settings: Settings
    admin: redis.Redis
    client: redis.Redis
    ops: QueueOps
    pending: str
    processing: str
    at_least_once: bool
    _router: redis.Redis
    _pinned: bool
    _on_cluster: bool
    _uncounted: int
    _unread: Callable[[], list[bytes]] | None

    def _pin(self) -> None:
        """Give the dispatcher a client that holds one connection instead of taking it from the
        pool for each command: the pool checks every connection it hands out with a poll()
        first, which costs as much CPU as the command itself. A link broken while idle then
        shows as an error on the next command (the loop reconnects, settles and recovers, as
        after any error) instead of a silent replacement. Made here, not in __init__, because
        it connects: a Redis that is down is the reconnect loop's business."""
        if not self._pinned:
            # On a cluster, the pool of the primary that holds the queue's slot, looked up
            # again after each error (a failover moves it).
            self.client = pinned_client(self._router, self.pending)
            self.ops = self._ops(self.client)
            self._pinned = True

    def _ops(self, client: redis.Redis) -> QueueOps:
        return QueueOps(client, self.queue, self.settings.dead_max, self.settings.max_attempts,
                        self.admin)  # fmt: skip

    def _blocking_pop(self, block: float) -> bytes | None:
        """One message, waiting up to ``block`` seconds for it."""
        raw: bytes | None
        if self.at_least_once:
            # redis-py types the timeout as int; Redis takes seconds as a float.
            raw = self.client.blmove(self.pending, self.processing, block, "RIGHT", "LEFT")  # type: ignore[arg-type,assignment]
        else:
            popped = self.client.brpop([self.pending], block)
            raw = popped[1] if popped else None  # type: ignore[assignment]
            if raw is not None:  # a crash before this count shows as one unaccounted
                self._count_taken(1)
        return raw

    def _count_taken(self, n: int) -> None:
        """Count ``n`` messages a blocking pop took (at-most-once). A refusal must not cost the
        message now in hand: what could not be counted is counted with the next ones."""
        try:
            self.ops.taken(n + self._uncounted)
            self._uncounted = 0
        except redis.RedisError as exc:
            self._uncounted += n
            log.warning("queue %s: %d taken messages not counted yet (%s)", self.queue,
                        self._uncounted, exc)  # fmt: skip

    def close_connections(self) -> None:
        self._unread = None  # a reply not read is lost with its connection (_sending is not)
        if self._pinned or not self._on_cluster:
            drop_connections(self.client)
        if self._on_cluster:  # the next serve() asks the slot map where the queue is
            drop_connections(self._router)
            self.client = self._router
            self.ops = self._ops(self.client)
            self._pinned = False
