"""The worker's moves on one queue: claim, ack, retry, dead-letter, release, recover, reap.

Each one is a single Lua script (:mod:`consumers.lua`), so a message is always in exactly one of
``pending``, a ``processing`` list or ``dead``, whoever moves it and whenever a process dies.
What producers, the web and operators do with dead letters is in :mod:`producer.deadletters`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from consumers import lua
from producer import keys
from producer.deadletters import dead_entry
from producer.envelope import EnvelopeError, decode

log = logging.getLogger(__name__)
RECOVER_CHUNK = 500  # messages moved per script call (keeps one call short under a huge list)


class QueueOps:
    """The moves of one queue, on one client."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.pending = keys.pending(queue)
        self.dead = keys.dead(queue)
        self.consumers = keys.consumers(queue)
        self._claim = client.register_script(lua.CLAIM)
        self._ack = client.register_script(lua.ACK)
        self._move = client.register_script(lua.MOVE)
        self._reap = client.register_script(lua.REAP)
        self._heartbeat = client.register_script(lua.HEARTBEAT)
        self._stale = client.register_script(lua.STALE)

    def claim(self, consumer: str, count: int) -> list[bytes]:
        """Move up to ``count`` of the oldest pending messages into ``consumer``'s processing
        list, without blocking; oldest first."""
        return list(self._claim(keys=[self.pending, self._proc(consumer)], args=[count]))

    def ack(self, consumer: str, raws: Sequence[bytes]) -> int:
        """Forget handled messages; returns how many were still in the processing list."""
        if not raws:
            return 0
        return int(self._ack(keys=[self._proc(consumer)], args=list(raws)))

    def retry(self, consumer: str, raw: bytes, new_raw: bytes) -> bool:
        """Put a failed message at the back of the line as ``new_raw`` (attempt + 1)."""
        return self._move_from(self._proc(consumer), [(raw, new_raw, "L")]) == 1

    def dead_letter(self, consumer: str | None, raw: bytes, reason: str) -> bool:
        """Move ``raw`` from the processing list (or from nowhere: at-most-once) to ``dead``."""
        entry = dead_entry(raw, reason, queue=self.queue, consumer=consumer)
        if consumer is None:
            self.client.lpush(self.dead, entry)
            return True
        return self._move_from(self._proc(consumer), [(raw, entry, "D")]) == 1

    def release(self, consumer: str, raws: Sequence[bytes]) -> int:
        """Give back claimed messages that were never handed to the handler, unchanged, to the
        consuming end, so they are popped next in their original order (``raws`` oldest first)."""
        triples = [(raw, raw, "R") for raw in reversed(raws)]
        return self._move_from(self._proc(consumer), triples)

    def recover(self, consumer: str) -> tuple[int, int]:
        """Requeue ``consumer``'s whole processing list at the consuming end (oldest next), each
        with attempt + 1; garbage goes to ``dead``. Returns (requeued, dead-lettered)."""
        source = self._proc(consumer)
        requeued = dead = 0
        while raws := self._read_list(source):
            triples = _plan(raws, self.queue, consumer)
            moved = self._move_from(source, triples)
            if moved == 0:
                break  # someone else moved them meanwhile
            dead += sum(1 for t in triples if t[2] == "D")
            requeued += moved - sum(1 for t in triples if t[2] == "D")
        return requeued, dead

    def heartbeat(self, consumer: str, client: redis.Redis | None = None) -> None:
        """Stamp ``consumer``'s heartbeat with Redis's time (on ``client``: a pipeline)."""
        self._heartbeat(keys=[self.consumers], args=[consumer], client=client or self.client)

    def stale(self, ttl_s: float) -> list[str]:
        """Consumers whose heartbeat is at least ``ttl_s`` old, by Redis's clock."""
        found: list[bytes] = self._stale(keys=[self.consumers], args=[int(ttl_s * 1000)])
        names = []
        for member in found:
            try:
                names.append(member.decode())
            except UnicodeDecodeError:  # not a name a worker of this bus could have written
                log.warning(
                    "queue %s: ignoring a consumer entry that is not UTF-8: %r", self.queue, member
                )
        return names

    def reap(self, ttl_s: float) -> dict[str, tuple[int, int]]:
        """Recover the processing lists of consumers whose heartbeat is older than ``ttl_s`` and
        unregister them. Returns {consumer: (requeued, dead-lettered)} for each one reaped."""
        reaped = {}
        for name in self.stale(ttl_s):
            result = self.reap_consumer(name, ttl_s)
            if result is not None:
                reaped[name] = result
        return reaped

    def reap_consumer(self, name: str, ttl_s: float) -> tuple[int, int] | None:
        """Reap one consumer, checked silent again inside each script; None if it is alive
        (it came back after :meth:`stale` saw it): its messages are its own again."""
        source = self._proc(name)
        requeued = dead = 0
        while True:
            triples = _plan(self._read_list(source), self.queue, name)
            args: list[Any] = [name, int(ttl_s * 1000)]
            for t in triples:
                args.extend(t)
            moved = int(
                self._reap(keys=[source, self.pending, self.dead, self.consumers], args=args)
            )
            if moved < 0:
                return None
            dead += sum(1 for t in triples if t[2] == "D")
            requeued += moved - sum(1 for t in triples if t[2] == "D")
            if not triples or moved == 0:
                return requeued, dead

    def _proc(self, consumer: str) -> str:
        return keys.processing(self.queue, consumer)

    def _read_list(self, key: str) -> list[bytes]:
        # From the head (newest): each later, older chunk is RPUSHed closer to the consuming end.
        return self.client.lrange(key, 0, RECOVER_CHUNK - 1)  # type: ignore[return-value]

    def _move_from(self, source: str, triples: Sequence[tuple[bytes, bytes, str]]) -> int:
        if not triples:
            return 0
        args: list[Any] = []
        for t in triples:
            args.extend(t)
        return int(self._move(keys=[source, self.pending, self.dead], args=args))


def _plan(raws: list[bytes], queue: str, consumer: str) -> list[tuple[bytes, bytes, str]]:
    """Moves that give back a processing list: newest first, so RPUSH leaves the oldest at the
    consuming end; each message with attempt + 1; garbage to dead."""
    triples = []
    for raw in raws:  # LRANGE order: newest (head side) first
        try:
            triples.append((raw, decode(raw).next_attempt().encode(), "R"))
        except EnvelopeError as exc:
            entry = dead_entry(raw, f"undecodable: {exc.reason}", queue=queue, consumer=consumer)
            triples.append((raw, entry, "D"))
    return triples
