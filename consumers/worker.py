"""The queue worker: pops ``bus:{q}:pending`` from the tail (FIFO) and runs a handler.

``at-least-once`` (default): claim the oldest messages into this worker's own processing list
(BLMOVE when the queue is empty; a Lua claim of up to ``batch_size`` while a backlog exists),
run the handler on each, then settle the batch in one script: ack what was handled, requeue a
failure with attempt + 1 (up to ``max_attempts``, then dead-letter it), give back unchanged
what was never handed to the handler. The same script claims the next batch: one round trip
per batch. Garbage is dead-lettered, raw bytes kept.

A crash or a broken link leaves claimed messages in the processing list, never nowhere. The
worker remembers what became of each message it claimed, so after a reconnect it settles them
as they were handled (no redelivery of a handled message, no attempt counted for one the
handler never saw); whatever else its list holds is a "ghost pop" (a move Redis made for a
connection that was already gone: never handled, given back unchanged) or, on start, what a
previous process of the same name left (which may have reached its handler: attempt + 1). The
reaper in every worker requeues the list of a worker whose heartbeat expired, attempt + 1.

``at-most-once``: BRPOP (RPOP with a count under a backlog); the messages in hand are lost if
the process dies. A handler exception dead-letters the message (it is never delivered twice).

Each blocking pop waits at most ``block_timeout_s`` with a socket read deadline of
``worker_read_timeout_s``, so a dead link raises instead of hanging. stop() finishes the message
in hand, gives the rest of a batch back unchanged, and releases a blocked pop at once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable

import redis

from consumers.daemon import Daemon
from consumers.delayed import Mover, retry_how
from consumers.handlers import Handler, check_handler
from consumers.lists import ORPHAN_PASSES, QueueOps
from consumers.moves import ACK, Move, give_back_move, started_move, tracked_how
from consumers.tracking import Context, encode_result, takes_context
from producer import Envelope, EnvelopeError, Settings, decode, keys, make_client
from producer.connection.client import drop_connections, node_client, pinned_client
from producer.connection.cluster import ClusterClient
from producer.errors import NameTaken, Reject
from producer.observe.stats import Stats
from producer.store.envelope import now_ms

log = logging.getLogger(__name__)
STARTED = "started"  # a claimed message in the handler's hands


class Worker(Daemon):
    """Consumes one queue with one handler."""

    role = "worker"

    def __init__(self, settings: Settings, queue: str, name: str, handler: Handler) -> None:
        labels = {
            "queue": queue,
            "delivery": settings.delivery,
            "name": name,
            "heartbeat_ttl_ms": str(int(settings.heartbeat_ttl_s * 1000)),
        }
        scope = {"queue": queue, "delivery": settings.delivery}
        super().__init__(settings, name, Stats("worker", f"{queue}:{name}", labels, scope))
        self.queue = queue
        check_handler(handler)
        self.handler = handler
        self._with_context = takes_context(handler)  # handler(env, ctx) rather than handler(env)
        self._popped: bytes | None = None  # taken by a blocking pop: no script marked it
        self.client = self._router = make_client(settings, "worker", name)
        self.ops = self._ops(self.client)
        self._pinned = False  # self.client holds one connection (see _pin)
        self._on_cluster = isinstance(self._router, ClusterClient)
        self.admin_ops = self._ops(self.admin)
        self.pending = keys.pending(queue)
        self.processing = keys.processing(queue, name)
        self.at_least_once = settings.delivery == "at-least-once"
        self._beat_at = self._reap_at = 0.0
        self._reap_passes = 0
        # What became of each message this process claimed and has not settled yet, in claim
        # order: [raw, None] not handed to the handler, [raw, STARTED] in its hands, else
        # [raw, the settling move]. By place, not by bytes: two identical envelopes are two
        # messages.
        self._claimed: list[list[bytes | Move | str | None]] = []
        self._fatal: BaseException | None = None  # a handler's SystemExit & co, re-raised
        self._entry: list[bytes | Move | str | None] | None = None  # the one in process()
        self._uncounted = 0  # at-most-once: taken by a blocking pop, whose count failed
        self._settles = 0  # batches settled: with the token, each settle's own token
        self._unlisted: list[Move] = []  # at-most-once dead letters not written yet
        self._handled = 0  # this batch's handled count and latencies, not in the stats yet
        self._latencies: list[int] = []
        self._recovered_once = False  # what a previous process left is recovered
        self._token = uuid.uuid4().hex  # this process's claim on the name
        self._token_held = False
        # Delayed messages: every mover_interval_s the due ones become pending (any worker's
        # mover may move any of them; one script each time, so never twice).
        self._mover = Mover(self.admin_ops, settings.mover_interval_s)

    def run(self) -> None:
        """The daemon's loop, with the delayed messages' mover beside it."""
        self._mover.start()
        try:
            super().run()
        finally:
            self._mover.stop()

    def serve(self) -> None:
        """Settle what this process claimed, recover what else its list holds, then pop and
        handle until stopped."""
        self._pin()
        self._heartbeat()  # takes the name's lease first: one process per name
        if self.stopping.is_set():
            return
        self._recover(self.ops)
        self.mark_connected()
        # A non-blocking batch first: there may be a backlog already.
        batch = self._take(self.settings.batch_size)
        while not self.stopping.is_set():
            more = len(batch) == self.settings.batch_size  # a full batch: a backlog exists
            if not batch:
                batch = self._blocking_pop()
                self.mark_serving()
                more = True  # the first of a new backlog, perhaps
                if not batch:
                    if self.at_least_once and self.client.llen(self.processing):
                        # Idle, holding nothing, yet the list is not empty: a pop that Redis
                        # served to a connection we had dropped landed after our recovery.
                        self._recover(self.ops)
                    continue
            self._handle(batch)
            # Settle it; claim the next batch in the same round trip (at-least-once), or pop
            # one (at-most-once) if a backlog may exist.
            size = 0 if self.stopping.is_set() else self.settings.batch_size
            if self.at_least_once:
                batch = self._settle(self.ops, claim=size)
                self.mark_serving()
            else:
                self._settle(self.ops)
                batch = self._take(size) if more else []
                self.mark_serving()

    def _pin(self) -> None:
        """Give the hot loop a client that holds one connection instead of taking it from the
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
        return QueueOps(client, self.queue, self.settings.dead_max, self.settings.max_attempts)

    def _take(self, size: int) -> list[bytes]:
        """Up to ``size`` of the oldest messages at once, without blocking."""
        if size <= 0:
            return []
        if self.at_least_once:
            batch = self.ops.claim(self.name, size)
            self._claimed.extend([raw, None] for raw in batch)
            return batch
        return self.ops.take(size)

    def _blocking_pop(self) -> list[bytes]:
        """One message, waiting up to ``block_timeout_s`` for it."""
        block = self.settings.block_timeout_s
        raw: bytes | None
        if self.at_least_once:
            # redis-py types the timeout as int; Redis takes seconds as a float.
            raw = self.client.blmove(self.pending, self.processing, block, "RIGHT", "LEFT")  # type: ignore[arg-type,assignment]
            if raw is not None:
                self._claimed.append([raw, None])
        else:
            popped = self.client.brpop([self.pending], block)
            raw = popped[1] if popped else None  # type: ignore[assignment]
            if raw is not None:  # a crash before this count shows as one unaccounted
                self._count_taken(1)
        self._popped = raw
        return [raw] if raw is not None else []

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

    def _handle(self, batch: list[bytes]) -> None:
        """Handle a batch in order (its settling is the caller's); on stop, what was not
        handed to the handler goes back unchanged."""
        at_least_once, stopping = self.at_least_once, self.stopping
        entries = self._claimed[len(self._claimed) - len(batch) :] if at_least_once else []
        try:
            for i, raw in enumerate(batch):
                if i and stopping.is_set():
                    if not at_least_once:  # claimed ones are given back when settling
                        self.ops.give_back(batch[i:])
                    break
                if at_least_once:
                    entry = self._entry = entries[i]  # process() marks it STARTED
                    entry[1] = self.process(raw)
                    self._entry = None
                else:
                    move = self.process(raw)
                    if move is not None:
                        self._unlisted.append(move)
                if self._fatal is not None:  # settled as a failure; the process ends
                    fatal, self._fatal = self._fatal, None
                    if not at_least_once:  # popped, in no list: back
                        self.ops.give_back(batch[i + 1 :])
                    raise fatal
        finally:  # the batch's counts, in one go
            if self._handled:
                self.stats.incr("handled", self._handled)
                self._handled = 0
            if self._latencies:
                self.stats.observe_latencies_ms(self._latencies)
                self._latencies = []

    def process(self, raw: bytes) -> Move | None:
        """Decode and run the handler; the move that settles the message: an ack, a retry, a
        dead letter (at-most-once: None when handled, nothing to settle). A tracked message's
        moves carry what its record needs (see :mod:`producer.store.tracking`)."""
        consumer = self.name if self.at_least_once else None
        try:
            env = decode(raw, default_mode="prodcons")
        except EnvelopeError as exc:
            log.warning(
                "queue %s: dead-lettering garbage (%s, %d bytes)", self.queue, exc, len(raw)
            )
            self.stats.incr("dead_lettered")
            return self.ops.dead_move(raw, f"undecodable: {exc.reason}", consumer)
        if env.ts:  # 0: the producer did not say when it sent it
            self._latencies.append(now_ms() - env.ts)
        if env.track and (raw is self._popped or not self.at_least_once):
            # No claim script saw it: its in-flight is written here, before the handler runs.
            self.ops.record(env, "in-flight", "worker", self.name, "attempt", env.attempt)
        if self._entry is not None:  # from here on its handler may have seen it
            self._entry[1] = STARTED
        try:
            if self._with_context:
                result = self.handler(env, Context(env, self.queue, self.name,
                                                   self._progress_writer(env)))  # fmt: skip
            else:
                result = self.handler(env)
            if inspect.isawaitable(result):  # it never ran: nothing here awaits it
                _discard(result)
                what = f"{type(result).__name__} {result!r}"
                raise Reject(f"the handler returned {what}, which this worker cannot await "
                             "(its handlers are plain functions)")  # fmt: skip
        except Exception as exc:  # the handler's failure is data, not a reason to stop
            return self._failed(raw, env, exc, consumer)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the process ends,
            self._fatal = exc  # after this message is settled as a failed attempt
            log.error("queue %s: handler raised %s on %s attempt %d; the worker will exit",
                      self.queue, type(exc).__name__, env.id, env.attempt)  # fmt: skip
            return self._failed(raw, env, exc, consumer)
        self._handled += 1
        if not env.track:
            return (raw, b"", ACK) if self.at_least_once else None
        data, refused = encode_result(result, self.settings.result_max_bytes)
        if refused:
            log.warning("queue %s: message %s: %s", self.queue, env.id, refused)
        if self.at_least_once:
            return raw, data, tracked_how(ACK, env, refused)
        fields: list[str | int] = ["attempt", env.attempt, "progress", 1]
        if data:
            fields += ["result", data.decode()]
        if refused:
            fields += ["result_error", refused]
        self.ops.record(env, "handled", *fields)
        return None

    def _failed(self, raw: bytes, env: Envelope, exc: BaseException,
                consumer: str | None) -> Move:  # fmt: skip
        """The move for a message whose handler raised: a retry while attempts remain
        (at-least-once), else a dead letter."""
        self.stats.incr("failed")
        summary = _summary(exc)
        error = summary.splitlines()[-1]
        if isinstance(exc, Reject):
            log.warning("queue %s: handler rejected %s: %s; dead-lettering", self.queue,
                        env.id, exc)  # fmt: skip
            self.stats.incr("dead_lettered")
            return self.ops.dead_move(raw, f"rejected: {exc}"[:2000], consumer, env)
        if self.at_least_once and env.attempt < self.settings.max_attempts:
            log.info(
                "queue %s: handler failed on %s attempt %d: %s; retrying",
                self.queue,
                env.id,
                env.attempt,
                error,
            )
            self.stats.incr("retried")
            how = tracked_how(retry_how(self.settings, env.attempt), env, error)
            return raw, env.next_attempt().encode(), how
        log.warning(
            "queue %s: handler failed on %s attempt %d: %s; dead-lettering",
            self.queue,
            env.id,
            env.attempt,
            error,
        )
        self.stats.incr("dead_lettered")
        reason = f"handler failed on attempt {env.attempt}: {summary}"
        return self.ops.dead_move(raw, reason, consumer, env)

    def _progress_writer(self, env: Envelope) -> Callable[[float, str], bool]:
        def write(fraction: float, text: str) -> bool:
            return self.ops.progress(env, self.name, fraction, text)

        return write

    def stop(self) -> None:
        """Stop after the message in hand; a pop blocked in Redis is released at once."""
        super().stop()
        # From a thread: stop() may run inside a signal handler, and the pop may only start
        # after this call. CLIENT UNBLOCK makes a blocked pop return nil, as if it timed out:
        # nothing is popped, nothing is lost.
        threading.Thread(target=self._unblock, name=f"unblock-{self.name}", daemon=True).start()

    def close_connections(self) -> None:
        if self._pinned or not self._on_cluster:
            drop_connections(self.client)
        if self._on_cluster:  # the next serve() asks the slot map where the queue is
            drop_connections(self._router)
            self.client = self._router
            self.ops = self._ops(self.client)
            self._pinned = False

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

    def on_exit(self) -> None:
        """Leave nothing behind: settle and give back anything still claimed, then leave the
        registry."""
        try:
            if self._token_held:
                self._recover(self.admin_ops)
                self.admin.zrem(keys.consumers(self.queue), self.name)
                self.admin.delete(keys.settled(self.queue, self.name))  # all is settled
                self.admin_ops.release_name(self.name, self._token)
        except redis.RedisError as exc:
            log.warning(
                "queue %s: could not clean up on exit (%s); the reaper will", self.queue, exc
            )

    def _settle(self, ops: QueueOps, claim: int = 0) -> list[bytes]:
        """Settle every message this process claimed: a handled one by its move, one not
        handed to the handler given back unchanged (oldest next), one the handler had started
        and did not finish (a process stopped by an error) with attempt + 1. With ``claim``,
        claim up to that many more in the same script and return them (at-least-once)."""
        moves: list[Move] = list(self._unlisted)
        given_back: list[Move] = []
        for raw, state in self._claimed:
            assert isinstance(raw, bytes)
            if state is None:
                given_back.append(give_back_move(raw))
            elif state == STARTED:
                max_attempts = self.settings.max_attempts
                given_back.append(started_move(raw, self.queue, self.name, max_attempts))
            else:
                moves.append(state)  # type: ignore[arg-type]
        given_back.reverse()  # RPUSH newest first: the oldest ends at the consuming end
        claimed: list[bytes] = []
        dropped = 0
        # The same token until this batch is settled: a repeat after a lost reply is a no-op
        # if the lost call ran (see producer/store/lua/lib/replay.lua).
        token = f"{self._token}:{self._settles}" if self.at_least_once else ""
        if claim > 0:
            _, dropped, claimed = ops.settle_claim(self.name, moves + given_back, claim, token)
        elif moves or given_back:
            consumer = self.name if self.at_least_once else None
            _, dropped = ops.settle(consumer, moves + given_back, token)
        self._settles += 1
        if dropped:
            self.stats.incr("dead_dropped", dropped)
        self._claimed = [[raw, None] for raw in claimed]
        self._unlisted.clear()
        return claimed

    def _recover(self, ops: QueueOps) -> None:
        """Settle what this process knows, then give back whatever else the list holds: on
        the first run what a previous process of this name left (attempt + 1: its handler may
        have seen them), later only ghost pops (never handled: unchanged)."""
        self._settle(ops)
        if not self.at_least_once and self._recovered_once:
            return  # an at-most-once worker's list is empty: only its first run finds one
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
                node = node_client(self.admin, self.pending)  # on a cluster: the queue's node
                for c in node.client_list(_type="normal"):
                    if c.get("name") == name and c.get("cmd") in ("blmove", "brpop"):
                        node.client_unblock(int(c["id"]))
            if self.finished.wait(0.1):
                return


def _discard(awaitable: object) -> None:
    """Close a coroutine nobody will await (no "never awaited" warning; its finally runs)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def _summary(exc: BaseException) -> str:
    """The exception and the last frames of its traceback, bounded (for the dead-letter entry)."""
    frames = traceback.format_exception(exc, limit=-3)
    return "".join(frames).strip()[-2000:]
