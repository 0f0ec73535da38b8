"""The worker's moves on one queue: claim, settle a batch, recover, reap, heartbeats.

Each move is a single Lua script (``producer/store/lua/``), so a message is always in exactly one
of ``pending``, a ``processing`` list or ``dead``, whoever moves it and whenever a process dies.
What producers, the web and operators do with dead letters is in :mod:`producer.store.deadletters`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis

from consumers.moves import (
    DEAD,
    DEAD_UNLISTED,
    Move,
    plan_give_back,
    tracked_how,
)
from producer import keys
from producer.store import after, scripts, tracking
from producer.store.deadletters import dead_entry
from producer.store.envelope import Envelope

Claimed = tuple[int, int, list[bytes]]  # settle_claim's reply: moved, dropped, claimed
log = logging.getLogger(__name__)
RECOVER_CHUNK = 500  # messages moved per script call (keeps one call short under a huge list)
ORPHAN_PASSES = 12  # a reaper looks for unregistered workers' lists every 12th pass (60 s)
CANCELLED = -1  # QueueOps.record: the message was cancelled while it waited (lua/record.lua)


class QueueOps:
    """The moves of one queue, on one client; ``dead_max`` caps the dead letters (0: no cap);
    ``max_attempts`` dead-letters a message whose worker stopped holding it on its last
    attempt (0: no limit): a message that kills its worker must not come back forever."""

    def __init__(self, client: redis.Redis, queue: str, dead_max: int = 0,
                 max_attempts: int = 0, router: redis.Redis | None = None) -> None:  # fmt: skip
        self.client = client
        # what tells the messages that wait for the ones settled here (any queue, any node)
        self.router = client if router is None else router
        self.queue = queue
        self.dead_max = dead_max
        self.max_attempts = max_attempts
        self.pending = keys.pending(queue)
        self.dead = keys.dead(queue)
        self.dropped = keys.dead_dropped(queue)
        self.consumers = keys.consumers(queue)
        self.delayed = keys.delayed(queue)
        self.gate = keys.tracking(queue)

    def claim(self, consumer: str, count: int) -> list[bytes]:
        """Move up to ``count`` of the oldest pending messages into ``consumer``'s processing
        list, without blocking; oldest first."""
        claim_keys = [self.pending, self._proc(consumer), self.gate]
        return list(scripts.CLAIM(self.client, claim_keys, [count]))

    def take(self, count: int) -> list[bytes]:
        """At-most-once: pop up to ``count`` of the oldest pending messages, counted as taken
        (producer/store/counts.py); oldest first."""
        return list(scripts.TAKE(self.client, [self.pending], [count]))

    def send_take(self, count: int) -> Callable[[], list[bytes]]:
        """:meth:`take`, sent without waiting: call the function returned for its reply (see
        :meth:`producer.connection.scripting.Script.send`)."""
        receive = scripts.TAKE.send(self.client, [self.pending], [count])
        return lambda: list(receive())

    def taken(self, count: int) -> None:
        """At-most-once: count messages a blocking pop took (it cannot count them itself)."""
        scripts.TAKEN(self.client, [keys.counts(self.queue)], [count])

    def give_back(self, raws: Sequence[bytes]) -> None:
        """At-most-once: put back ``raws`` (taken, never handed to the handler; oldest first)
        at the consuming end, uncounted."""
        if raws:
            scripts.GIVE_BACK(self.client, [self.pending, keys.counts(self.queue)], list(raws))

    def settle(self, consumer: str | None, moves: Sequence[Move],
               token: str = "") -> tuple[int, int]:  # fmt: skip
        """Apply a batch's outcomes in one script: acks, retries, dead letters, and messages
        given back unchanged. Each move happens only if its message is still in the list (so
        settling twice, after a lost reply, does nothing more). ``consumer`` None: at-most-once,
        whose messages are in no list (only ``DEAD_UNLISTED`` then). ``token``: new for each
        batch of a worker, the same when the batch is settled again after a lost reply; then,
        if the first call ran, nothing moves (see producer/store/lua/lib/replay.lua). Returns
        (moved, dropped: dead letters the cap trimmed)."""
        if not moves:
            return 0, 0
        args: list[Any] = [self.dead_max, token]
        for move in moves:
            args.extend(move)
        source = self._proc(consumer) if consumer else self.pending  # P never reads it
        marker = keys.settled(self.queue, consumer) if consumer else self.pending  # '' token
        move_keys = [source, self.pending, self.dead, self.dropped, self.delayed, self.gate,
                     marker]  # fmt: skip
        moved, dropped, told = scripts.SETTLE(self.client, move_keys, args)
        self.tell(int(told))
        return int(moved), int(dropped)

    def tell(self, told: int) -> None:
        """A script wrote ``told`` outbox entries (messages that wait for those it finished):
        tell them now (:func:`producer.store.after.drain`). If Redis fails here, the mover's
        next pass does it."""
        if not told:
            return
        try:
            after.drain(self.router, self.queue, self.dead_max)
        except redis.RedisError as exc:
            log.info("queue %s: the messages waiting for %d settled here are told later (%s)",
                     self.queue, told, exc)  # fmt: skip

    def settle_claim(self, consumer: str, moves: Sequence[Move], count: int,
                     token: str = "") -> Claimed:  # fmt: skip
        """:meth:`settle` ``consumer``'s batch, then :meth:`claim` up to ``count`` more, in one
        script (one round trip per batch). Returns (moved, dropped, claimed oldest first)."""
        args, keys_ = self._settle_claim_call(consumer, moves, count, token)
        return self._claimed(scripts.SETTLE_CLAIM(self.client, keys_, args))

    def send_settle_claim(self, consumer: str, moves: Sequence[Move], count: int,
                          token: str = "") -> Callable[[], Claimed]:  # fmt: skip
        """:meth:`settle_claim`, sent without waiting: call the function returned for its reply
        (see :meth:`producer.connection.scripting.Script.send`)."""
        args, keys_ = self._settle_claim_call(consumer, moves, count, token)
        receive = scripts.SETTLE_CLAIM.send(self.client, keys_, args)
        return lambda: self._claimed(receive())

    def _settle_claim_call(self, consumer: str, moves: Sequence[Move], count: int,
                           token: str) -> tuple[list[Any], list[str]]:  # fmt: skip
        args: list[Any] = [self.dead_max, count, token]
        for move in moves:
            args.extend(move)
        keys_ = [self._proc(consumer), self.pending, self.dead, self.dropped, self.delayed,
                 self.gate, keys.settled(self.queue, consumer)]  # fmt: skip
        return args, keys_

    def dead_move(self, raw: bytes, reason: str, consumer: str | None,
                  env: Envelope | None = None) -> Move:  # fmt: skip
        """The move that dead-letters ``raw`` (from ``consumer``'s list, or from nowhere); with
        the envelope of a tracked message, its record says ``dead`` and why."""
        entry = dead_entry(raw, reason, queue=self.queue, consumer=consumer)
        return raw, entry, tracked_how(DEAD if consumer else DEAD_UNLISTED, env, reason)

    def record(self, env: Envelope, state: str, *fields: str | int) -> int:
        """Write a tracked message's state and ``fields`` (name, value, ...) outside a move: the
        in-flight of a message taken by a blocking pop, the at-most-once outcomes. 1 when
        written, 0 when the queue keeps no records (its gate expired), :data:`CANCELLED` for
        an in-flight of a message cancelled while it waited (nothing written: drop it)."""
        args = [env.id, state, *fields]
        return int(scripts.RECORD(self.client, [self.gate, keys.record(self.queue, env.id)], args))

    def cancel_asked(self, env: Envelope) -> bool:
        """Whether tracked message ``env`` was cancelled while its handler runs."""
        return bool(self.client.hexists(keys.record(self.queue, env.id), "cancel_ms"))

    def results(self, env: Envelope) -> list[Any]:
        """The results of the messages ``env`` waited for (``after``), in order: see
        :func:`producer.store.tracking.results_before`."""
        return tracking.results_before(self.router, self.queue, env.id)

    def progress(self, env: Envelope, consumer: str, fraction: float, text: str) -> bool:
        """Write a tracked message's progress while ``consumer`` holds it; False otherwise."""
        args = [consumer, repr(fraction), text]
        return bool(
            scripts.PROGRESS(self.client, [self.gate, keys.record(self.queue, env.id)], args)
        )

    def recover(self, consumer: str, bump: bool = True) -> tuple[int, int]:
        """Give back ``consumer``'s whole processing list at the consuming end (oldest next):
        with attempt + 1 if the handler may have seen them (``bump``), else unchanged; garbage
        goes to ``dead``. Returns (requeued, dead-lettered)."""
        source = self._proc(consumer)
        requeued = dead = 0
        alone = None  # the list held one message: the one its handler had, if any
        started = self._started(consumer)
        while raws := self._read_list(source):
            alone = len(raws) == 1 if alone is None else False
            moves = plan_give_back(raws, self.queue, consumer, bump, self.max_attempts, alone,
                                   started)  # fmt: skip
            moved, _ = self.settle(consumer, moves)
            if moved == 0:
                break  # someone else moved them meanwhile
            dead += sum(1 for m in moves if m[2][0] == DEAD)
            requeued += moved - sum(1 for m in moves if m[2][0] == DEAD)
        self.client.delete(keys.started(self.queue, consumer))
        return requeued, dead

    def mark_started(self, consumer: str, raw: bytes) -> None:
        """Note that ``consumer``'s handler starts the redelivered message ``raw`` (see
        :func:`producer.keys.started`)."""
        self.client.sadd(keys.started(self.queue, consumer), raw)

    def unmark_started(self, consumer: str, raws: Sequence[bytes]) -> None:
        """Forget the settled ``raws`` of :meth:`mark_started`."""
        if raws:
            self.client.srem(keys.started(self.queue, consumer), *raws)

    def _started(self, consumer: str) -> frozenset[bytes]:
        found: set[bytes] = self.client.smembers(keys.started(self.queue, consumer))  # type: ignore[assignment]
        return frozenset(found)

    def resolve_waiting(self) -> None:
        """Tell the messages that wait for this queue's ones what finished (its outbox), and
        read again the prerequisites of this queue's waiting messages whose turn has come
        (:mod:`producer.store.after`): the mover's pass."""
        after.drain(self.router, self.queue, self.dead_max)
        after.sweep(self.router, self.queue, self.dead_max)

    def move_due(self, batch: int = 1000) -> int:
        """Make the delayed messages that are due pending (oldest due first), ``batch`` per
        script, until none is due. Returns how many moved."""
        moved = 0
        while True:
            due_keys = [self.delayed, self.pending, self.gate]
            n = int(scripts.MOVE_DUE(self.client, due_keys, [batch]))
            moved += n
            if n < batch:
                return moved

    def heartbeat(self, consumer: str, token: str, ttl_s: float) -> bool:
        """Renew ``consumer``'s lease held with ``token`` and stamp its heartbeat with Redis's
        time; False (nothing written) when another process holds the name."""
        args: list[str | int] = [consumer, token, int(ttl_s * 1000)]
        return bool(scripts.HEARTBEAT(self.client, [self.consumers, self._owner(consumer)], args))

    def take_name(self, consumer: str, token: str, ttl_s: float) -> float:
        """Take ``consumer``'s lease for ``token`` if nobody holds it: 0.0; else the seconds
        the other holder's lease has left (it renews them while it lives)."""
        left = scripts.TAKE_NAME(self.client, [self._owner(consumer)], [token, int(ttl_s * 1000)])
        return int(left) / 1000

    def release_name(self, consumer: str, token: str) -> None:
        """Let ``consumer``'s lease go if ``token`` still holds it."""
        scripts.RELEASE_NAME(self.client, [self._owner(consumer)], [token])

    def stale(self, ttl_s: float) -> list[str]:
        """Consumers whose heartbeat is at least ``ttl_s`` old, by Redis's clock."""
        found: list[bytes] = scripts.STALE(self.client, [self.consumers], [int(ttl_s * 1000)])
        names = []
        for member in found:
            try:
                names.append(member.decode())
            except UnicodeDecodeError:  # not a name a worker of this bus could have written
                log.warning(
                    "queue %s: ignoring a consumer entry that is not UTF-8: %r", self.queue, member
                )
        return names

    def reap(self, ttl_s: float, spare: str | None = None,
             orphans: bool = False) -> dict[str, tuple[int, int]]:  # fmt: skip
        """Recover the processing lists of consumers whose heartbeat is older than ``ttl_s`` and
        unregister them, never ``spare`` (the calling worker: alive, whatever its heartbeat
        says); with ``orphans``, also the lists of consumers that are not registered at all
        (:meth:`orphans`). Returns {consumer: (requeued, dead-lettered)} for each one reaped."""
        reaped = {}
        names = self.stale(ttl_s)
        if orphans:
            names += self.orphans()
        for name in names:
            if name == spare:
                continue
            result = self.reap_consumer(name, ttl_s)
            if result is not None:
                reaped[name] = result
        return reaped

    def orphans(self) -> list[str]:
        """Consumers with a processing list and no entry in the registry: a registry lost (a
        FLUSH, an AOF that did not load whole) or a worker's exit that could not finish. Found
        with SCAN, which walks the whole keyspace: call it seldom (the reap script then checks
        that no process holds the name)."""
        prefix = keys.processing_prefix(self.queue)
        registered = set(self.client.zrange(self.consumers, 0, -1))
        found = []
        for key in self.client.scan_iter(match=prefix + "*", count=1000, _type="list"):
            name = key[len(prefix) :]
            if name not in registered:
                try:
                    found.append(name.decode())
                except UnicodeDecodeError:  # not a name a worker of this bus could have used
                    log.warning("queue %s: ignoring a processing list %r", self.queue, key)
        return found

    def reap_consumer(self, name: str, ttl_s: float) -> tuple[int, int] | None:
        """Reap one consumer, checked silent again inside each script; None if it is alive
        (it came back after :meth:`stale` saw it): its messages are its own again. Its
        messages count an attempt: which ones its handler had started is not known."""
        source = self._proc(name)
        requeued = dead = 0
        alone = None  # the list held one message: the one its handler had, if any
        started = self._started(name)
        while True:
            raws = self._read_list(source)
            alone = len(raws) == 1 if alone is None else False
            moves = plan_give_back(raws, self.queue, name, True, self.max_attempts, alone, started)
            args: list[Any] = [name, int(ttl_s * 1000), self.dead_max]
            for move in moves:
                args.extend(move)
            reap_keys = [source, self.pending, self.dead, self.dropped, self.consumers,
                         self.delayed, self.gate, self._owner(name)]  # fmt: skip
            moved, _, told = scripts.REAP(self.client, reap_keys, args)
            if int(moved) < 0:
                return None
            self.tell(int(told))
            dead += sum(1 for m in moves if m[2][0] == DEAD)
            requeued += int(moved) - sum(1 for m in moves if m[2][0] == DEAD)
            if not moves or int(moved) == 0:
                self.client.delete(keys.started(self.queue, name))
                return requeued, dead

    def _claimed(self, reply: list[Any]) -> Claimed:
        moved, dropped, told, *claimed = reply
        self.tell(int(told))
        return int(moved), int(dropped), claimed

    def _proc(self, consumer: str) -> str:
        return keys.processing(self.queue, consumer)

    def _owner(self, consumer: str) -> str:
        return keys.owner(self.queue, consumer)

    def _read_list(self, key: str) -> list[bytes]:
        # From the head (newest): each later, older chunk is RPUSHed closer to the consuming end.
        return self.client.lrange(key, 0, RECOVER_CHUNK - 1)  # type: ignore[return-value]
