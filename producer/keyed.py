"""The producer's sends under an idempotency key (:mod:`producer.store.once`): a push or a
publish made at most once per key within the key's window, each one script that checks the key
and sends. :class:`~producer.Producer` has them from :class:`KeyedSends`; :class:`Sent` is what
every send returns."""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from producer.errors import IdempotencyConflict, QueueFull, Unconfirmed
from producer.observe.stats import Stats
from producer.store import envelope, keys, once, scripts


@dataclass(frozen=True)
class Sent:
    """What one send did: the envelope and Redis's answer (queue depth, receivers, or for a
    delayed message how many wait in ``bus:{q}:delayed``, and ``due_ms``: when it is due, in
    ms since the epoch on Redis's clock). ``repeat``: a send with an idempotency key that was
    made before (nothing was sent now; the envelope and answer are the first one's).
    ``queue``: the queue a push went to ("" for a publish): what ``after`` reads of it."""

    envelope: envelope.Envelope
    result: int
    due_ms: int | None = None
    repeat: bool = False
    queue: str = ""


def new_src() -> str:
    """A producer id unique to this process: short, readable, never reused."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:10]}"


class KeyedSends:
    """The keyed push and publish of :class:`~producer.Producer`; the attributes and the
    three methods below are the producer's."""

    src: str
    stats: Stats | None
    sharded: bool
    max_queue_depth: int
    result_ttl_ms: int
    once_ms: int
    _seqs: dict[str, int]

    def _lock_for(self, dest: str) -> threading.Lock:
        raise NotImplementedError  # the producer's: one lock per destination

    def _write(self, command: tuple[Any, ...]) -> Any:
        raise NotImplementedError  # the producer's: one command, WAIT for replicas if asked

    def _options(self, queue: str, delay_s: float | None, not_before: float | None,
                 track: bool | None, timeout_s: float | None,
                 ) -> tuple[float | None, bool, int, int]:  # fmt: skip
        raise NotImplementedError  # the producer's: a push's options checked

    def _push_once(self, payload: Any, queue: str, key: str, delay_s: float | None,
                   not_before: float | None, track: bool | None, timeout_s: float | None,
                   priority: int | None) -> Sent:  # fmt: skip
        """:meth:`push` with an idempotency key: one script checks the key and pushes."""
        timeout_s, track, delay_ms, due = self._options(queue, delay_s, not_before, track,
                                                        timeout_s)  # fmt: skip
        level = envelope.check_priority(priority)
        later = delay_ms >= 0 or due >= 0
        fingerprint = once.fingerprint(queue, payload, delay_ms, due, track, timeout_s, level)
        dest = keys.pending(queue)
        with self._lock_for(dest):
            seq = self._seqs.get(dest, 1)
            env = envelope.new(payload, src=self.src, seq=seq, mode="prodcons", track=track,
                               timeout_s=timeout_s, priority=level)  # fmt: skip
            raw = env.encode()
            push_keys = [dest, keys.delayed(queue), keys.tracking(queue), keys.once(queue, key)]
            if track:
                push_keys.append(keys.record(queue, env.id))
            args = (self.max_queue_depth, delay_ms, due, self.result_ttl_ms, self.once_ms,
                    fingerprint, raw, level)  # fmt: skip
            try:
                reply = scripts.PUSH_ONCE.run(self._write, push_keys, args)
            except Unconfirmed as exc:  # it may have run: a retry with the key will say
                exc.envelopes = (env,)
                self._seqs[dest] = seq + 1
                if self.stats:
                    self.stats.incr("unconfirmed", 1)
                raise
            kind = int(reply[0])
            if kind == 1:
                self._seqs[dest] = seq + 1
        if kind == 0:
            if self.stats:
                self.stats.incr("refused_full", 1, queue)
            raise QueueFull(queue, int(reply[1]), self.max_queue_depth, 1)
        if kind == 2:  # a repeat: nothing sent, this envelope's number stays free
            if not int(reply[1]):
                raise IdempotencyConflict(queue, key)
            first = envelope.decode(reply[2])
            return Sent(first, int(reply[3]), int(reply[4]) if later else None,
                        repeat=True, queue=queue)  # fmt: skip
        if self.stats:
            self.stats.incr("pushed", 1, queue)
            if later:
                self.stats.incr("scheduled", 1, queue)
        return Sent(env, int(reply[1]), int(reply[2]) if later else None, queue=queue)

    def _publish_once(self, payload: Any, channel: str, key: str) -> Sent:
        """:meth:`publish` with an idempotency key: one script checks the key and publishes."""
        fingerprint = once.fingerprint(channel, payload, -1, -1, False, None)
        dest = keys.channel(channel)
        with self._lock_for(dest):
            seq = self._seqs.get(dest, 1)
            env = envelope.new(payload, src=self.src, seq=seq, mode="pubsub")
            args = (dest, "SPUBLISH" if self.sharded else "PUBLISH", self.once_ms, fingerprint,
                    env.encode())  # fmt: skip
            try:
                reply = scripts.PUBLISH_ONCE.run(self._write, [keys.channel_once(channel, key)],
                                                 args)  # fmt: skip
            except Unconfirmed as exc:  # it may have run: a retry with the key will say
                exc.envelopes = (env,)
                self._seqs[dest] = seq + 1
                raise
            if int(reply[0]) == 1:
                self._seqs[dest] = seq + 1
        if int(reply[0]) == 2:  # a repeat: nothing published, this number stays free
            if not int(reply[1]):
                raise IdempotencyConflict(channel, key)
            return Sent(envelope.decode(reply[2], default_mode="pubsub"), int(reply[3]),
                        repeat=True)  # fmt: skip
        if self.stats:
            self.stats.incr("published", 1, channel)
            self.stats.incr("published_zero", 1 if int(reply[1]) == 0 else 0, channel)
        return Sent(env, int(reply[1]))
