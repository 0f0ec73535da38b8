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


class Unconfirmed(redis.ConnectionError):
    """The connection broke after the command was sent: the message may or may not have been
    pushed or published. Counted as ``unconfirmed``; its sequence number is never reused."""


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
        # One LPUSH with many values is atomic: never half-applied.
        (depth,) = self._execute([("LPUSH", key, *raws)])
        return [int(depth) - len(raws) + 1 + i for i in range(len(raws))]

    def _publish(self, channel: str, raws: list[bytes]) -> list[int]:
        return [int(n) for n in self._execute([("PUBLISH", channel, raw) for raw in raws])]

    def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write on one pooled connection and read their replies,
        telling apart what surely did not run from what may have run.

        Taking a connection from the pool replaces one the server had closed (idle timeout,
        kill, restart) before anything is sent. If one command could not be written whole,
        Redis never ran it: it is sent once more on a fresh connection. A failure after the
        write raises :class:`Unconfirmed`: the reply was lost, the command may have run, and
        resending it could deliver a message twice."""
        pool = self.client.connection_pool
        for attempt in (1, 2):
            conn = pool.get_connection()
            try:
                try:
                    conn.send_packed_command(conn.pack_commands(commands))
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    conn.disconnect()
                    if len(commands) > 1:  # the first ones may have been written whole
                        raise Unconfirmed(f"connection broke while sending: {exc}") from exc
                    if attempt == 1:
                        continue
                    raise
                try:
                    return [conn.read_response() for _ in commands]
                except redis.ResponseError:
                    conn.disconnect()  # later replies of the batch are unread
                    raise
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    conn.disconnect()
                    raise Unconfirmed(f"no reply after sending: {exc}") from exc
            except BaseException:
                # Interrupted (KeyboardInterrupt, gevent's GreenletExit) with replies possibly
                # unread: the connection must not go back to the pool as it is, or the next
                # command would read this one's reply as its own.
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")

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
            except Unconfirmed:
                # They may have run: never reuse these numbers. After any other error nothing
                # ran, so they stay free and no subscriber counts a false gap.
                self._seqs[dest] = first + len(raws)
                if self.stats:
                    self.stats.incr("unconfirmed", len(raws))
                raise
            self._seqs[dest] = first + len(raws)
        return [Sent(e, r) for e, r in zip(envs, results, strict=True)]

    def _lock_for(self, dest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(dest, threading.Lock())
