"""The queue worker: pops ``bus:{q}:pending`` from the tail (FIFO) and runs a handler.

``at-least-once`` (default): claim the oldest messages into this worker's own processing list
(BLMOVE when the queue is empty; a Lua claim of up to ``batch_size`` while a backlog exists),
run the handler on each, then ack (LREM). A crash or a broken link leaves claimed messages in
the processing list, never nowhere: on start and after every reconnect the worker requeues what
its list holds (this also catches the "ghost pop": a move Redis made for a connection that was
already gone), and the reaper in every worker requeues the list of a worker whose heartbeat
expired. A handler exception requeues the message with attempt + 1, up to ``max_attempts``,
then dead-letters it. Garbage is dead-lettered at once, raw bytes kept.

``at-most-once``: BRPOP (RPOP with a count under a backlog); the messages in hand are lost if
the process dies. A handler exception dead-letters the message (it is never delivered twice).

Each blocking pop waits at most ``block_timeout_s`` with a socket read deadline of
``worker_read_timeout_s``, so a dead link raises instead of hanging. stop() finishes the message
in hand, gives the rest of a batch back unchanged, and releases a blocked pop at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback

import redis

from consumers.daemon import Daemon
from consumers.handlers import Handler
from consumers.lists import QueueOps
from producer import EnvelopeError, Settings, decode, keys, make_client
from producer.stats import Stats

log = logging.getLogger(__name__)


class Worker(Daemon):
    """Consumes one queue with one handler."""

    role = "worker"

    def __init__(self, settings: Settings, queue: str, name: str, handler: Handler) -> None:
        labels = {"queue": queue, "delivery": settings.delivery, "name": name}
        super().__init__(settings, name, Stats("worker", f"{queue}:{name}", labels))
        self.queue = queue
        self.handler = handler
        self.client = make_client(settings, "worker", name)
        self.ops = QueueOps(self.client, queue)
        self.admin_ops = QueueOps(self.admin, queue)
        self.pending = keys.pending(queue)
        self.processing = keys.processing(queue, name)
        self.at_least_once = settings.delivery == "at-least-once"
        self._beat_at = self._reap_at = 0.0

    def serve(self) -> None:
        """Recover own in-flight messages, then pop and handle until stopped."""
        if self.at_least_once:
            self._recover()
        self._heartbeat()
        self.mark_connected()
        backlog = True  # try a non-blocking batch first: there may be a backlog already
        while not self.stopping.is_set():
            batch, backlog = self._next_batch(backlog)
            if batch:
                self._handle(batch)
            elif self.at_least_once and self.client.llen(self.processing):
                # Idle, holding nothing, yet the list is not empty: a pop that Redis served to
                # a connection we had already dropped landed after our recovery. Requeue it.
                self._recover()

    def _next_batch(self, backlog: bool) -> tuple[list[bytes], bool]:
        """Up to ``batch_size`` messages at once while a backlog exists, else one blocking pop.
        Also says whether to expect a backlog next time."""
        size = self.settings.batch_size
        if backlog:
            if self.at_least_once:
                batch = self.ops.claim(self.name, size)
            else:
                batch = self.client.rpop(self.pending, size) or []  # type: ignore[assignment]
            if batch:
                return batch, len(batch) == size
        block = self.settings.block_timeout_s
        raw: bytes | None
        if self.at_least_once:
            # redis-py types the timeout as int; Redis takes seconds as a float.
            raw = self.client.blmove(self.pending, self.processing, block, "RIGHT", "LEFT")  # type: ignore[arg-type,assignment]
        else:
            popped = self.client.brpop([self.pending], block)
            raw = popped[1] if popped else None  # type: ignore[assignment]
        return ([raw], True) if raw is not None else ([], False)

    def _handle(self, batch: list[bytes]) -> None:
        """Handle a batch in order; ack the handled ones in one round trip."""
        acks: list[bytes] = []
        try:
            for i, raw in enumerate(batch):
                if i and self.stopping.is_set():
                    self._give_back(batch[i:])
                    break
                if self.process(raw):
                    acks.append(raw)
        finally:
            if acks:
                self.ops.ack(self.name, acks)

    def process(self, raw: bytes) -> bool:
        """Decode and run the handler; retry or dead-letter a failure. True: ack it."""
        consumer = self.name if self.at_least_once else None
        try:
            env = decode(raw, default_mode="prodcons")
        except EnvelopeError as exc:
            log.warning(
                "queue %s: dead-lettering garbage (%s, %d bytes)", self.queue, exc, len(raw)
            )
            self.ops.dead_letter(consumer, raw, f"undecodable: {exc.reason}")
            self.stats.incr("dead_lettered")
            return False
        if env.ts:  # 0: the producer did not say when it sent it
            self.stats.observe_latency_ms(env.age_ms())
        try:
            self.handler(env)
        except Exception as exc:  # the handler's failure is data, not a reason to stop
            self.stats.incr("failed")
            summary = _summary(exc)
            if self.at_least_once and env.attempt < self.settings.max_attempts:
                log.info("queue %s: handler failed on %s attempt %d: %s; retrying",
                         self.queue, env.id, env.attempt, summary.splitlines()[-1])  # fmt: skip
                self.ops.retry(self.name, raw, env.next_attempt().encode())
                self.stats.incr("retried")
            else:
                log.warning("queue %s: handler failed on %s attempt %d: %s; dead-lettering",
                            self.queue, env.id, env.attempt, summary.splitlines()[-1])  # fmt: skip
                reason = f"handler failed on attempt {env.attempt}: {summary}"
                self.ops.dead_letter(consumer, raw, reason)
                self.stats.incr("dead_lettered")
            return False
        self.stats.incr("handled")
        return self.at_least_once

    def stop(self) -> None:
        """Stop after the message in hand; a pop blocked in Redis is released at once."""
        super().stop()
        # From a thread: stop() may run inside a signal handler, and the pop may only start
        # after this call. CLIENT UNBLOCK makes a blocked pop return nil, as if it timed out:
        # nothing is popped, nothing is lost.
        threading.Thread(target=self._unblock, name=f"unblock-{self.name}", daemon=True).start()

    def close_connections(self) -> None:
        self.client.connection_pool.disconnect()

    def on_tick(self, pipe: redis.client.Pipeline) -> None:
        now = time.monotonic()
        if now - self._beat_at >= self.settings.heartbeat_interval_s:
            self.admin_ops.heartbeat(self.name, client=pipe)
            self._beat_at = now

    def after_tick(self) -> None:
        """The reaper: requeue the in-flight messages of workers whose heartbeat expired."""
        now = time.monotonic()
        if now - self._reap_at < self.settings.reaper_interval_s:
            return
        self._reap_at = now
        for name, (requeued, dead) in self.admin_ops.reap(self.settings.heartbeat_ttl_s).items():
            log.warning("queue %s: reaped dead worker %s: requeued %d in-flight (%d garbage)",
                        self.queue, name, requeued, dead)  # fmt: skip

    def on_exit(self) -> None:
        """Leave nothing behind: requeue anything still claimed, then leave the registry."""
        try:
            if self.at_least_once:
                requeued, _ = self.admin_ops.recover(self.name)
                if requeued:
                    log.warning("queue %s: requeued %d unacknowledged messages on exit",
                                self.queue, requeued)  # fmt: skip
            self.admin.zrem(keys.consumers(self.queue), self.name)
        except redis.RedisError as exc:
            log.warning(
                "queue %s: could not clean up on exit (%s); the reaper will", self.queue, exc
            )

    def _give_back(self, raws: list[bytes]) -> None:
        if self.at_least_once:
            self.ops.release(self.name, raws)
        else:
            self.client.rpush(self.pending, *reversed(raws))

    def _recover(self) -> None:
        requeued, dead = self.ops.recover(self.name)
        if requeued or dead:
            self.stats.incr("recovered", requeued)
            self.stats.incr("dead_lettered", dead)
            log.warning("queue %s: requeued %d in-flight messages from %s (%d garbage)",
                        self.queue, requeued, self.processing, dead)  # fmt: skip

    def _heartbeat(self) -> None:
        self.ops.heartbeat(self.name)

    def _unblock(self) -> None:
        """Until the loop has ended, release any pop blocked on a connection of this worker,
        found by its client name: redis-py may have replaced the connection silently (a pooled
        connection the server had closed), so an id taken earlier could name a dead one."""
        name = f"bus:worker:{self.name}"
        while True:
            with contextlib.suppress(redis.RedisError):  # the block timeout still bounds it
                for c in self.admin.client_list(_type="normal"):
                    if c.get("name") == name and c.get("cmd") in ("blmove", "brpop"):
                        self.admin.client_unblock(int(c["id"]))
            if self.finished.wait(0.1):
                return


def _summary(exc: BaseException) -> str:
    """The exception and the last frames of its traceback, bounded (for the dead-letter entry)."""
    frames = traceback.format_exception(exc, limit=-3)
    return "".join(frames).strip()[-2000:]
