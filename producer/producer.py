"""The producer: wraps payloads in envelopes and LPUSHes or PUBLISHes them."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from producer import envelope, keys
from producer.stats import Stats


@dataclass(frozen=True)
class Sent:
    """What one send did: the envelope and Redis's answer (queue depth or receivers)."""

    envelope: envelope.Envelope
    result: int


def new_src() -> str:
    """A producer id unique to this process: short, readable, never reused."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:10]}"


class Producer:
    """Sends messages on one client. Thread-safe; create one per process (not before a fork).

    ``seq`` counts per destination (queue or channel), so a subscriber of one channel sees
    consecutive numbers and can count exactly what it missed. Sequence numbers are taken and
    sent under a per-destination lock so that concurrent threads cannot reorder them.
    """

    def __init__(self, client: redis.Redis, src: str | None = None, stats: Stats | None = None):
        self.client = client
        self.src = src or new_src()
        self.stats = stats
        self._seqs: dict[str, int] = {}  # destination -> next sequence number
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def push(self, payload: Any, queue: str = "default") -> Sent:
        """LPUSH one message onto ``queue``; the result is the queue depth after the push."""
        return self.push_many([payload], queue)[0]

    def publish(self, payload: Any, channel: str = "default") -> Sent:
        """PUBLISH one message on ``channel``; the result is how many subscribers received it."""
        return self.publish_many([payload], channel)[0]

    def push_many(self, payloads: Iterable[Any], queue: str = "default") -> list[Sent]:
        """LPUSH several messages in one round trip (in order, so FIFO holds among them)."""
        sent = self._send(keys.pending(queue), payloads, "prodcons", self._lpush)
        if self.stats:
            self.stats.incr("pushed", len(sent))
        return sent

    def publish_many(self, payloads: Iterable[Any], channel: str = "default") -> list[Sent]:
        """PUBLISH several messages in one round trip; each result is its receiver count."""
        sent = self._send(keys.channel(channel), payloads, "pubsub", self._publish)
        if self.stats:
            self.stats.incr("published", len(sent))
            self.stats.incr("published_zero", sum(1 for s in sent if s.result == 0))
        return sent

    def _lpush(self, key: str, raws: list[bytes]) -> list[int]:
        # One LPUSH with many values is atomic: never half-applied, so safe to retry.
        depth = int(self.client.lpush(key, *raws))
        return [depth - len(raws) + 1 + i for i in range(len(raws))]

    def _publish(self, channel: str, raws: list[bytes]) -> list[int]:
        if len(raws) == 1:
            return [int(self.client.publish(channel, raws[0]))]
        pipe = self.client.pipeline(transaction=False)
        for raw in raws:
            pipe.publish(channel, raw)
        return [int(n) for n in pipe.execute()]

    def _send(
        self,
        dest: str,
        payloads: Iterable[Any],
        mode: str,
        send: Callable[[str, list[bytes]], list[int]],
    ) -> list[Sent]:
        with self._lock_for(dest):
            first = self._seqs.get(dest, 1)
            envs = [
                envelope.new(p, src=self.src, seq=first + i, mode=mode)
                for i, p in enumerate(payloads)
            ]
            raws = [e.encode() for e in envs]  # a payload that is not JSON fails here
            if not raws:
                return []
            try:
                results = send(dest, raws)
            except redis.TimeoutError:
                # It may have run: never reuse these numbers. After any other error nothing
                # was sent, so they stay free and no subscriber counts a false gap.
                self._seqs[dest] = first + len(raws)
                raise
            self._seqs[dest] = first + len(raws)
        return [Sent(e, r) for e, r in zip(envs, results, strict=True)]

    def _lock_for(self, dest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(dest, threading.Lock())
