"""The queue worker: pops ``bus:{q}:pending`` from the tail (FIFO) and runs a handler.

``at-least-once`` (default): BLMOVE the oldest message into this worker's own processing list,
run the handler, then ack (LREM). A crash or a broken link leaves the message in the processing
list, never nowhere; on start and after every reconnect the worker requeues what its list holds
(this also catches the "ghost pop": a move Redis made for a connection that was already gone).
A handler exception requeues the message with attempt + 1, up to ``max_attempts``, then
dead-letters it. Garbage is dead-lettered at once, raw bytes kept.

``at-most-once``: BRPOP; the message in hand is lost if the process dies. A handler exception
dead-letters the message (it is never delivered twice).

Each blocking pop waits at most ``block_timeout_s`` and its socket read deadline is
``worker_read_timeout_s``, so a dead link raises instead of hanging and stop() is honoured
within one block timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback

import redis

from consumers.daemon import Daemon
from consumers.handlers import Handler
from producer import EnvelopeError, Settings, decode, keys, make_client
from producer.envelope import now_ms
from producer.queue import QueueOps
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
        self.pending = keys.pending(queue)
        self.processing = keys.processing(queue, name)
        self.at_least_once = settings.delivery == "at-least-once"
        self._client_id: int | None = None

    def stop(self) -> None:
        """Stop after the message in hand; a pop blocked in Redis is released at once."""
        super().stop()
        if self._client_id is not None:
            # CLIENT UNBLOCK makes the blocked pop return nil, as if it timed out: nothing is
            # popped, nothing is lost. From a thread: stop() may run inside a signal handler.
            threading.Thread(target=self._unblock, args=(self._client_id,), daemon=True).start()

    def _unblock(self, client_id: int) -> None:
        with contextlib.suppress(redis.RedisError):  # the block timeout still bounds the wait
            self.admin.client_unblock(client_id)

    def serve(self) -> None:
        """Recover own in-flight messages, then pop and handle until stopped."""
        if self.at_least_once:
            self._recover()
        self._heartbeat()
        self._client_id = int(self.client.client_id())
        self.mark_connected()
        block = self.settings.block_timeout_s
        while not self.stopping.is_set():
            raw: bytes | None
            if self.at_least_once:
                # redis-py types the timeout as int; Redis takes seconds as a float.
                raw = self.client.blmove(self.pending, self.processing, block, "RIGHT", "LEFT")  # type: ignore[arg-type,assignment]
            else:
                popped = self.client.brpop([self.pending], block)
                raw = popped[1] if popped else None  # type: ignore[assignment]
            if raw is not None:
                self.process(raw)

    def process(self, raw: bytes) -> None:
        """Decode, run the handler, then ack, retry or dead-letter."""
        consumer = self.name if self.at_least_once else None
        try:
            env = decode(raw)
        except EnvelopeError as exc:
            log.warning(
                "queue %s: dead-lettering garbage (%s, %d bytes)", self.queue, exc, len(raw)
            )
            self.ops.dead_letter(consumer, raw, f"undecodable: {exc.reason}")
            self.stats.incr("dead_lettered")
            return
        self.stats.observe_latency_ms(env.age_ms())
        try:
            self.handler(env)
        except Exception as exc:  # the handler's failure is data, not a reason to stop
            self.stats.incr("failed")
            summary = "".join(traceback.format_exception_only(exc)).strip()
            if self.at_least_once and env.attempt < self.settings.max_attempts:
                log.info(
                    "queue %s: handler failed on %s attempt %d: %s; retrying",
                    self.queue,
                    env.id,
                    env.attempt,
                    summary,
                )
                self.ops.retry(self.name, raw, env.next_attempt().encode())
                self.stats.incr("retried")
            else:
                log.warning(
                    "queue %s: handler failed on %s attempt %d: %s; dead-lettering",
                    self.queue,
                    env.id,
                    env.attempt,
                    summary,
                )
                reason = f"handler failed on attempt {env.attempt}: {summary[:2000]}"
                self.ops.dead_letter(consumer, raw, reason)
                self.stats.incr("dead_lettered")
            return
        if self.at_least_once:
            self.ops.ack(self.name, raw)
        self.stats.incr("handled")

    def close_connections(self) -> None:
        self._client_id = None
        self.client.connection_pool.disconnect()

    def on_tick(self, pipe: redis.client.Pipeline) -> None:
        pipe.zadd(keys.consumers(self.queue), {self.name: now_ms()})

    def on_exit(self) -> None:
        """Leave nothing behind: requeue anything still claimed, then leave the registry."""
        try:
            if self.at_least_once:
                requeued, dead = QueueOps(self.admin, self.queue).recover(self.name)
                if requeued or dead:
                    log.warning(
                        "queue %s: requeued %d unacknowledged messages on exit",
                        self.queue,
                        requeued,
                    )
            self.admin.zrem(keys.consumers(self.queue), self.name)
        except redis.RedisError as exc:
            log.warning(
                "queue %s: could not clean up on exit (%s); the reaper will", self.queue, exc
            )

    def _recover(self) -> None:
        requeued, dead = self.ops.recover(self.name)
        if requeued or dead:
            self.stats.incr("recovered", requeued)
            self.stats.incr("dead_lettered", dead)
            log.warning(
                "queue %s: requeued %d in-flight messages from %s (%d garbage)",
                self.queue,
                requeued,
                self.processing,
                dead,
            )

    def _heartbeat(self) -> None:
        self.client.zadd(keys.consumers(self.queue), {self.name: now_ms()})
