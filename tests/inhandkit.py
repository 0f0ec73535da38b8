"""A worker's in-hand report, written into Redis exactly as a worker writes it.

The fields (``slots``, ``busy``, ``oldest_started_ms``, ``oldest_limit_ms``, ``abandoned``) land
through a real :class:`Stats` made as consumers/worker.py makes it, set with ``set_state`` and
flushed as consumers/daemon.py ``_write_stats`` does, beside the heartbeat the worker's tick
writes (the same script), on a real stats thread (:class:`Flusher`). Every test of the views
that needs a worker holding messages goes through here: an end-to-end test with a real worker
and a hung handler replaces this module once the worker writes these fields itself.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from consumers.lists import QueueOps
from producer import keys
from producer.observe.stats import Flusher, Stats
from producer.store.envelope import now_ms

DELIVERY = "at-least-once"


def hands(
    slots: int, busy: int = 0, oldest_age_ms: int = 0, limit_ms: int = 0, abandoned: int = 0
) -> dict[str, int]:
    """The fields of the worker's contract: ``busy`` of ``slots`` in hand, the oldest of them
    started ``oldest_age_ms`` ago with a limit of ``limit_ms`` (none when ``busy`` is 0)."""
    started = now_ms() - oldest_age_ms if busy else 0
    return {"slots": slots, "busy": busy, "oldest_started_ms": started,
            "oldest_limit_ms": limit_ms if busy else 0, "abandoned": abandoned}  # fmt: skip


class ReportingWorker:
    """One worker's stats hash and heartbeat on ``queue``, as worker ``name`` writes them."""

    def __init__(self, client: redis.Redis, queue: str, name: str, interval_s: float = 0.1,
                 heartbeat_ttl_s: float = 3.0, stats_ttl_s: float = 120.0) -> None:  # fmt: skip
        labels = {"queue": queue, "delivery": DELIVERY, "name": name,
                  "heartbeat_ttl_ms": str(int(heartbeat_ttl_s * 1000))}  # fmt: skip
        scope = {"queue": queue, "delivery": DELIVERY}
        self.stats = Stats("worker", f"{queue}:{name}", labels, scope)
        self.client = client
        self.name = name
        self.ops = QueueOps(client, queue)
        self.token = uuid.uuid4().hex
        self.interval_s = interval_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.stats_ttl_s = stats_ttl_s
        self._writing = threading.Lock()  # the test's writes and the stats thread's, in order

    def report(self, **fields: int) -> None:
        """Set the in-hand fields (see :func:`hands`) and write them at once with a heartbeat."""
        self.stats.set_state(**fields)
        self.tick()

    def tick(self) -> None:
        """One write of the worker's stats thread: the stats hash, then the heartbeat."""
        with self._writing:
            pipe = self.client.pipeline(transaction=False)
            self.stats.flush(pipe, self.stats_ttl_s, self.interval_s)
            pipe.execute()
            assert self.ops.heartbeat(self.name, self.token, self.heartbeat_ttl_s)

    def leave(self) -> None:
        """What a worker's clean exit writes: ``stopped_ms``, out of the registry."""
        self.stats.set_state(stopped_ms=now_ms())
        with self._writing:
            pipe = self.client.pipeline(transaction=False)
            self.stats.flush(pipe, self.stats_ttl_s, self.interval_s)
            pipe.zrem(keys.consumers(self.ops.queue), self.name)
            pipe.execute()
            self.ops.release_name(self.name, self.token)


@contextmanager
def reporting(
    client: redis.Redis, queue: str, name: str, **fields: int
) -> Iterator[ReportingWorker]:
    """A :class:`ReportingWorker` reporting ``fields`` now and every interval until the block
    ends (its heartbeat stays fresh), then leaving as a worker does."""
    worker = ReportingWorker(client, queue, name)
    worker.report(**fields)
    flusher = Flusher(worker.interval_s, worker.tick, name=f"test-{name}-stats")
    flusher.start()
    try:
        yield worker
    finally:
        flusher.stop()
        worker.leave()
