"""The producer: wraps payloads in envelopes and LPUSHes or PUBLISHes them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import redis

from producer.connection.client import make_client
from producer.connection.send import send_commands
from producer.errors import NotReplicated, QueueFull, Unconfirmed
from producer.flows import Flows
from producer.keyed import KeyedSends, Sent, new_src
from producer.observe.stats import Stats
from producer.pushes import ScriptedPushes
from producer.settings import Settings
from producer.store import envelope, keys, once, tracking
from producer.store.tracking import Cancellation


class Producer(KeyedSends, Flows, ScriptedPushes):
    """Sends messages on one client. Thread-safe; one per process is enough (made before a
    fork, its pool opens new connections in the child). ``Producer.from_env()`` builds one from
    the ``BUS_*`` settings; ``close()`` (or ``with``) closes its connections.

    A send raises :class:`Unconfirmed` when the reply was lost (the message may have been
    sent), :class:`NotReplicated` when replicas did not confirm it, :class:`QueueFull` past
    ``max_queue_depth``, ``redis.ConnectionError``/``TimeoutError`` when nothing was sent,
    ``redis.ResponseError`` when Redis refused it, and :class:`~producer.PayloadError` for a
    payload that is not strict JSON (see docs/python.md).

    ``seq`` counts per destination (queue or channel), so a subscriber of one channel sees
    consecutive numbers and can count exactly what it missed. Sequence numbers are taken and
    sent under a per-destination lock so that concurrent threads cannot reorder them.

    With ``max_queue_depth`` (0: none) a push that would take a queue past that many pending
    messages pushes nothing and raises :class:`QueueFull`.

    A tracked message (``track=True``, or every message of a queue in ``track_queues``, ``"*"``
    for all) gets a status record (:mod:`producer.store.tracking`) created with it, which lives
    ``result_ttl_s`` after its last change.

    With ``wait_replicas`` each push also WAITs (same round trip) until that many replicas have
    it, at most ``wait_timeout_s``; fewer raises :class:`NotReplicated`.

    ``sharded``: publish with SPUBLISH (sharded pub/sub, Redis 7: on a cluster the message
    stays on its channel's shard), for subscribers that SSUBSCRIBE.
    """

    def __init__(
        self,
        client: redis.Redis,
        src: str | None = None,
        stats: Stats | None = None,
        max_queue_depth: int = 0,
        track_queues: Iterable[str] = (),
        result_ttl_s: float = 86400.0,
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
        sharded: bool = False,
        idempotency_window_s: float = 3600.0,
    ) -> None:
        self.client = client
        self.sharded = sharded
        self.src = src or new_src()
        self.stats = stats
        self.max_queue_depth = max_queue_depth
        self.track_queues = frozenset(track_queues)
        if not result_ttl_s > 0:
            raise ValueError(f"result_ttl_s must be > 0, got {result_ttl_s!r}")
        self.result_ttl_ms = max(1, int(result_ttl_s * 1000))
        self.wait_replicas = wait_replicas
        self._wait_ms = max(1, int(wait_timeout_s * 1000))
        if not idempotency_window_s > 0:
            raise ValueError(f"idempotency_window_s must be > 0, got {idempotency_window_s!r}")
        self.once_ms = max(1, int(idempotency_window_s * 1000))
        self._seqs: dict[str, int] = {}  # destination -> next sequence number
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        client: redis.Redis | None = None,
        name: str | None = None,
        src: str | None = None,
        stats: Stats | None = None,
    ) -> Producer:
        """A producer configured by ``settings`` (``BUS_MAX_QUEUE_DEPTH``, ``BUS_TRACK_QUEUES``,
        ``BUS_RESULT_TTL_S``, ``BUS_WAIT_REPLICAS``, ``BUS_WAIT_TIMEOUT_S``,
        ``BUS_PUBSUB_MODE``, ``BUS_IDEMPOTENCY_WINDOW_S``), on ``client`` or
        a new producer-role client (``name`` shows in CLIENT LIST; Sentinel included)."""
        return cls(
            client if client is not None else make_client(settings, "producer", name),
            src=src,
            stats=stats,
            max_queue_depth=settings.max_queue_depth,
            track_queues=settings.track_queues,
            result_ttl_s=settings.result_ttl_s,
            wait_replicas=settings.wait_replicas,
            wait_timeout_s=settings.wait_timeout_s,
            sharded=settings.sharded_pubsub,
            idempotency_window_s=settings.idempotency_window_s,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, name: str | None = None,
                 **overrides: Any) -> Producer:  # fmt: skip
        """A producer configured by the ``BUS_*`` environment variables (``environ``, default
        ``os.environ``), with ``overrides`` (``Settings`` field names) winning over them:
        ``Producer.from_env()``, or ``Producer.from_env(redis_url="redis://host:6379/0")``.
        Raises :class:`~producer.SettingsError` for a bad setting. It connects on first use."""
        settings = Settings.from_env(os.environ if environ is None else environ, **overrides)
        return cls.from_settings(settings, name=name)

    def record(self, msg_id: str, queue: str = "default") -> dict[str, Any] | None:
        """The status record of a tracked message ``msg_id`` on ``queue`` (see docs/tracked.md):
        ``state``, ``attempt``, ``progress``, ``result``...; None when there
        is none (not tracked, unknown, or expired)."""
        return tracking.read_record(self.client, queue, msg_id)

    def close(self) -> None:
        """Close the producer's connections (it reconnects if used again)."""
        self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(
        self,
        payload: Any,
        queue: str = "default",
        *,
        delay_s: float | None = None,
        not_before: float | None = None,
        track: bool | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
        key: str | None = None,
        after: Iterable[Any] | None = None,
    ) -> Sent:
        """LPUSH one message onto ``queue``; the result is the queue depth after the push.
        Raises :class:`QueueFull` past ``max_queue_depth``. With ``delay_s`` (seconds from now,
        on Redis's clock) or ``not_before`` (Unix time, seconds) it waits in
        ``bus:{q}:delayed`` until then; with ``track`` it has a status record; with
        ``timeout_s`` its own time limit; with ``priority`` its level (see :meth:`push_many`).

        With ``key`` (an idempotency key: 1 to 255 printable ASCII characters, no spaces) it is
        pushed at most once within ``idempotency_window_s``: a push with the same key in that
        window pushes nothing and returns the first push's envelope and answer with
        ``repeat=True``; one with the same key and another request (queue, payload or options)
        raises :class:`~producer.IdempotencyConflict` (see :mod:`producer.store.once`).

        With ``after`` (messages: ids of ``queue``, ``(queue, id)`` pairs, or what a push
        returned) it is tracked and waits aside until every one of them is handled, then is
        pending; it ends dead-lettered (or cancelled) if one of them ends so (see
        :mod:`producer.store.after`). Each must be a tracked message with a record, else
        :class:`~producer.UnknownPrerequisite` and nothing is sent. The result is then how many
        it still waits for. Not with a delay."""
        if after is not None:
            if delay_s is not None or not_before is not None:
                raise ValueError("after cannot be combined with delay_s or not_before")
            if track is False:
                raise ValueError("a message pushed with after is tracked (track=False given)")
            return self._push_after(payload, queue, after, timeout_s, priority, key)
        if key is not None:
            return self._push_once(payload, queue, once.check_key(key), delay_s, not_before,
                                   track, timeout_s, priority)  # fmt: skip
        return self.push_many(
            [payload],
            queue,
            delay_s=delay_s,
            not_before=not_before,
            track=track,
            timeout_s=timeout_s,
            priority=priority,
        )[0]

    def cancel(self, msg_id: str, queue: str = "default") -> Cancellation | None:
        """Cancel tracked message ``msg_id`` of ``queue``: waiting (scheduled, pending or
        retrying), it will not be delivered (``outcome`` ``cancelled``); in a handler's hands,
        the handler's ``Context.cancelled`` is true from now on and the attempt is not retried
        (``signalled``); handled, dead or cancelled already, nothing is done (``finished``).
        None when ``queue`` has no record of it (not tracked, unknown, expired). ValueError for
        an id no record can have (see :mod:`producer.store.tracking`)."""
        bad = tracking.check_id(msg_id)
        if bad:
            raise ValueError(bad)
        return tracking.cancel(self.client, (queue,), msg_id)

    def publish(self, payload: Any, channel: str = "default", *, key: str | None = None) -> Sent:
        """PUBLISH one message on ``channel``; the result is how many subscribers received it.
        With ``key`` (an idempotency key, as for :meth:`push`) it is published at most once
        within ``idempotency_window_s``: a repeat publishes nothing and returns the first
        publish's envelope and receiver count with ``repeat=True``."""
        if key is not None:
            return self._publish_once(payload, channel, once.check_key(key))
        return self.publish_many([payload], channel)[0]

    def push_many(
        self,
        payloads: Iterable[Any],
        queue: str = "default",
        *,
        delay_s: float | None = None,
        not_before: float | None = None,
        track: bool | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
    ) -> list[Sent]:
        """LPUSH several messages in one round trip (in order, so FIFO holds among them): all of
        them, or none and :class:`QueueFull` when they would take the queue past the limit.

        Delayed (``delay_s`` >= 0 or ``not_before``, not both): they go to ``bus:{q}:delayed``,
        due together, and a worker's mover makes them pending, in push order, within
        ``BUS_MOVER_INTERVAL_S`` of that time. Their results count the delayed messages; the
        limit counts pending and delayed ones together.

        Tracked (``track`` True, or None and ``queue`` in ``track_queues``): each message's
        record (``bus:{q}:msg:<id>``, state ``pending`` or ``scheduled``) is created in the same
        script as the push.

        With ``timeout_s`` (seconds, > 0 and at most 604800, 7 days) each message carries its
        own time limit: a worker gives each attempt of its handler that long instead of
        ``BUS_HANDLER_TIMEOUT_S``, and an attempt past it has failed (retried, then
        dead-lettered at ``BUS_MAX_ATTEMPTS``.

        With ``priority`` (an integer from 0, the default, to 9) they wait at that level of the
        queue (``bus:{q}:pending:<p>``): a worker takes the highest level that holds a message
        first, the oldest first within a level; delayed, they take their level when they are
        due. A bad value raises ValueError, nothing sent."""
        timeout_s, track, delay_ms, due = self._options(queue, delay_s, not_before, track,
                                                        timeout_s)  # fmt: skip
        level = envelope.check_priority(priority)
        later = delay_ms >= 0 or due >= 0
        try:
            push: Callable[[str, list[bytes]], list[Any]]
            if track:
                push = partial(self._push_tracked, queue, delay_ms, due, level)
            elif not later:
                push = partial(self._lpush, queue, level)
            else:
                push = partial(self._schedule, queue, delay_ms, due)
            sent = self._send(keys.pending(queue), payloads, "prodcons", push, track, timeout_s,
                              level, queue)  # fmt: skip
        except QueueFull as full:
            if self.stats:
                self.stats.incr("refused_full", full.count, queue)
            raise
        if self.stats:
            self.stats.incr("pushed", len(sent), queue)
            if delay_s is not None or not_before is not None:
                self.stats.incr("scheduled", len(sent), queue)
        return sent

    def _options(self, queue: str, delay_s: float | None, not_before: float | None,
                 track: bool | None, timeout_s: float | None,
                 ) -> tuple[float | None, bool, int, int]:  # fmt: skip
        """A push's options checked (ValueError, nothing sent): its time limit, whether it is
        tracked, its delay in ms and its due time in ms (-1 each when not delayed)."""
        timeout_s = envelope.check_timeout(timeout_s)
        if delay_s is not None and not_before is not None:
            raise ValueError("give delay_s or not_before, not both")
        if delay_s is not None and not 0 <= delay_s < float("inf"):
            raise ValueError(f"delay_s must be a finite number >= 0, got {delay_s!r}")
        if track is None:
            track = queue in self.track_queues or "*" in self.track_queues
        later = delay_s is not None or not_before is not None
        due = -1 if not_before is None else int(not_before * 1000)
        delay_ms = int((delay_s or 0) * 1000) if later else -1
        return timeout_s, track, delay_ms, due

    def publish_many(self, payloads: Iterable[Any], channel: str = "default") -> list[Sent]:
        """PUBLISH several messages in one round trip; each result is its receiver count."""
        sent = self._send(keys.channel(channel), payloads, "pubsub", self._publish)
        if self.stats:
            self.stats.incr("published", len(sent), channel)
            self.stats.incr("published_zero", sum(1 for s in sent if s.result == 0), channel)
        return sent

    def _write(self, command: tuple[Any, ...]) -> Any:
        """Run one push command; its reply. With ``wait_replicas``, WAIT for that many replicas
        to have it, in the same round trip: fewer in ``wait_timeout_s`` raises
        :class:`NotReplicated` (it ran on the primary, and a failover could still lose it)."""
        if not self.wait_replicas:
            return send_commands(self.client, [command])[0]
        reply, acked = send_commands(
            self.client, [command, ("WAIT", self.wait_replicas, self._wait_ms)]
        )
        if int(acked) < self.wait_replicas:
            raise NotReplicated(
                f"{acked} of {self.wait_replicas} replicas confirmed the write within "
                f"{self._wait_ms} ms: it is on the primary, and a failover may lose it"
            )
        return reply

    def _publish(self, channel: str, raws: list[bytes]) -> list[Any]:
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        return [
            int(n) for n in send_commands(self.client, [(command, channel, raw) for raw in raws])
        ]

    def _send(
        self,
        dest: str,
        payloads: Iterable[Any],
        mode: str,
        send: Callable[..., list[Any]],
        track: bool = False,
        timeout_s: float | None = None,
        priority: int = 0,
        queue: str = "",
    ) -> list[Sent]:
        with self._lock_for(dest):
            first = self._seqs.get(dest, 1)
            envs = [
                envelope.new(
                    p,
                    src=self.src,
                    seq=first + i,
                    mode=mode,
                    track=track,
                    timeout_s=timeout_s,
                    priority=priority,
                )
                for i, p in enumerate(payloads)
            ]
            raws = [e.encode() for e in envs]  # a payload that is not JSON fails here
            if not raws:
                return []
            try:
                results = send(dest, raws, [e.id for e in envs]) if track else send(dest, raws)
            except Unconfirmed as exc:
                # They may have run: never reuse these numbers. After any other error nothing
                # ran, so they stay free and no subscriber counts a false gap.
                exc.envelopes = tuple(envs)
                self._seqs[dest] = first + len(raws)
                if self.stats:
                    self.stats.incr("unconfirmed", len(raws))
                raise
            self._seqs[dest] = first + len(raws)
        return [
            Sent(e, r[0], r[1], queue=queue) if isinstance(r, tuple) else Sent(e, r, queue=queue)
            for e, r in zip(envs, results, strict=True)
        ]

    def _lock_for(self, dest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(dest, threading.Lock())
