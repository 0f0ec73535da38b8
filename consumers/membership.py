"""A worker's place among the workers of its queue: the lease on its name, its heartbeat, the
reaper it runs for the others, and releasing its blocked pop on stop.

One process per name: a worker holds its name's lease (renewed by each heartbeat) before it
touches the processing list named after it. A crashed holder's lease lapses within the heartbeat
TTL; while a live one renews it, another process of that name waits, then gives up
(:class:`NameTaken`). The reaper in every worker requeues the list of a worker whose heartbeat
expired, attempt + 1, never its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

import redis

from consumers.daemon import Daemon
from consumers.lists import ORPHAN_PASSES, QueueOps
from producer import Settings
from producer.connection.client import node_client
from producer.errors import NameTaken
from producer.observe.stats import Stats

log = logging.getLogger("consumers.worker")


class QueueMember(Daemon):
    """The membership side of a queue worker; :class:`consumers.worker.Worker` consumes."""

    ops: QueueOps  # the consuming connection's (set by the worker)

    def __init__(self, settings: Settings, queue: str, name: str, stats: Stats) -> None:
        super().__init__(settings, name, stats)
        self.queue = queue
        self.admin_ops = QueueOps(self.admin, queue, settings.dead_max, settings.max_attempts)
        self._beat_at = self._reap_at = 0.0
        self._reap_passes = 0
        self._token = uuid.uuid4().hex  # this process's claim on the name
        self._token_held = False

    def stop(self) -> None:
        """Stop consuming; a pop blocked in Redis is released at once."""
        super().stop()
        # From a thread: stop() may run inside a signal handler, and the pop may only start
        # after this call. CLIENT UNBLOCK makes a blocked pop return nil, as if it timed out:
        # nothing is popped, nothing is lost.
        threading.Thread(target=self._unblock, name=f"unblock-{self.name}", daemon=True).start()

    def after_tick(self) -> None:
        """The heartbeat (which renews the name's lease), then the reaper: requeue the
        in-flight messages of workers whose heartbeat expired."""
        now = time.monotonic()
        if self._token_held and now - self._beat_at >= self.settings.heartbeat_interval_s:
            self._beat_at = now
            if not self.admin_ops.heartbeat(self.name, self._token, self.settings.heartbeat_ttl_s):
                # Redis lost our lease (an outage past its ttl) and another process took the
                # name: two would now share one processing list. Stop, touching nothing of
                # that list and registry entry on the way out: they are the other's now.
                self._token_held = False
                self.failure = NameTaken(self.queue, self.name)
                log.critical("queue %s: %s", self.queue, self.failure)
                self.stop()
        if now - self._reap_at < self.settings.reaper_interval_s:
            return
        self._reap_at = now
        # Never itself: its own heartbeat may be late (Redis refused it, the host stalled),
        # but it is handling its messages. Lists of unregistered workers: on the first pass
        # and every ORPHAN_PASSES passes after it (a SCAN of the whole keyspace).
        orphans = self._reap_passes % ORPHAN_PASSES == 0
        self._reap_passes += 1
        ttl = self.settings.heartbeat_ttl_s
        reaped = self.admin_ops.reap(ttl, spare=self.name, orphans=orphans)
        for name, (requeued, dead) in reaped.items():
            log.warning(
                "queue %s: reaped dead worker %s: requeued %d in-flight (%d dead-lettered)",
                self.queue,
                name,
                requeued,
                dead,
            )

    def _heartbeat(self) -> None:
        if not self._token_held:
            self._take_name()
        if not self.ops.heartbeat(self.name, self._token, self.settings.heartbeat_ttl_s):
            self._token_held = False  # the list and the registry entry are the other's now
            raise NameTaken(self.queue, self.name)

    def _take_name(self) -> None:
        """Hold the name's lease before touching its list: a crashed holder's lapses within
        the heartbeat TTL; a live one renews it, and then this process must not run."""
        ttl = self.settings.heartbeat_ttl_s
        deadline = time.monotonic() + ttl + 1
        while (left := self.ops.take_name(self.name, self._token, ttl)) > 0:
            if time.monotonic() + min(left, 0.2) > deadline:
                raise NameTaken(self.queue, self.name)
            log.info(
                "queue %s: waiting %.1fs for the lease on the name %s (a previous process?)",
                self.queue,
                left,
                self.name,
            )
            if self.stopping.wait(min(left, 0.2)):
                return
        self._token_held = True

    def _unblock(self) -> None:
        """Until the loop has ended, release any pop blocked on a connection of this worker,
        found by its client name: redis-py may have replaced the connection silently (a pooled
        connection the server had closed), so an id taken earlier could name a dead one."""
        name = f"bus:worker:{self.name}"
        while True:
            with contextlib.suppress(redis.RedisError):  # the block timeout still bounds it
                node = node_client(self.admin, self.ops.pending)  # on a cluster: the queue's node
                for c in node.client_list(_type="normal"):
                    if c.get("name") == name and c.get("cmd") in ("blmove", "brpop"):
                        node.client_unblock(int(c["id"]))
            if self.finished.wait(0.1):
                return
