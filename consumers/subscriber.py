"""The pub/sub subscriber: listens on channels and patterns, and notices when it is deaf.

It reads its connection in bulk (:mod:`consumers.resp`: every whole reply one ``recv``
brought, rather than redis-py's ``get_message``, one reply per call). After
``health_check_interval_s`` without traffic it sends a PING and expects the PONG (or any
message) within ``pong_deadline_s``. A miss drops the link; the reconnect loop
backs off, connects and resubscribes every channel and pattern. What was published meanwhile
is lost (pub/sub is at-most-once) and counted exactly from the producers' sequence numbers.
Garbage and handler failures go to the channel's capped dead list.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from consumers.daemon import Daemon, DeadLink
from consumers.gaps import NOTHING, GapCounter, Verdict
from consumers.handlers import Handler
from consumers.resp import Reply, SubscribedSocket
from producer import Envelope, EnvelopeError, Settings, decode, keys, make_client
from producer.client import drop_connections, node_client
from producer.deadletters import dead_entry
from producer.envelope import now_ms
from producer.stats import Stats

log = logging.getLogger(__name__)
POLL_S = 0.25  # how often the loop looks at the clock and the stop flag while idle
MAX_NAMES = 1000  # Redis channel names remembered with their bus names
_MESSAGES = (b"message", b"pmessage")
_CONFIRMATIONS = (b"subscribe", b"psubscribe")


class Subscriber(Daemon):
    """Subscribes to channels and patterns (bus names, without the ``bus:ch:`` prefix)."""

    role = "subscriber"

    def __init__(
        self,
        settings: Settings,
        channels: list[str],
        patterns: list[str],
        name: str,
        handler: Handler,
    ) -> None:
        if not channels and not patterns:
            raise ValueError("a subscriber needs at least one channel or pattern")
        labels = {"channels": ",".join(channels), "patterns": ",".join(patterns), "name": name}
        super().__init__(settings, name, Stats("subscriber", name, labels))
        self.channels = [keys.channel(c) for c in channels]
        self.patterns = [keys.channel(p) for p in patterns]
        self.handler = handler
        self.client = make_client(settings, "subscriber", name)
        self.gaps = GapCounter()
        self.node: redis.Redis | None = None  # the client of the server subscribed to
        self.conn: Any = None  # the subscribed redis-py connection, read by ``link``
        self.link: SubscribedSocket | None = None
        self._names: dict[bytes, str] = {}  # Redis channel -> bus name
        self._ages_ms: list[int] = []  # latencies of the messages of one read
        # Deaf until subscribed: since when, and how long a dead link may go unnoticed.
        deaf_after_s = settings.health_check_interval_s + settings.pong_deadline_s
        self.stats.set_state(
            deaf_since_ms=self.stats.started_ms, deaf_after_ms=int(deaf_after_s * 1000)
        )

    def serve(self) -> None:
        """Subscribe, then read messages and watch the PONG deadline until stopped."""
        # On a cluster, the node of the first channel: a PUBLISH reaches every node.
        self.node = node_client(self.client, (self.channels or self.patterns)[0])
        self.conn = self.node.connection_pool.get_connection()
        self.link = link = SubscribedSocket(self.conn)
        if self.channels:
            link.send("SUBSCRIBE", *self.channels)
        if self.patterns:
            link.send("PSUBSCRIBE", *self.patterns)
        self._await_confirmations(link)
        self.mark_connected()
        self.stats.set_state(deaf_since_ms=0)
        log.info(
            "subscriber %s: listening on %s", self.name, " ".join(self.channels + self.patterns)
        )
        heard_at = time.monotonic()
        ping_at: float | None = None
        interval = self.settings.health_check_interval_s
        deadline = self.settings.pong_deadline_s
        while not self.stopping.is_set():
            replies = link.read(POLL_S)
            now = time.monotonic()
            if replies is not None:  # any byte, even of an unfinished reply: the link lives
                heard_at, ping_at = now, None
                if replies:
                    self.on_replies(replies)
            elif ping_at is not None and now - ping_at > deadline:
                self.stats.incr("deadline_misses")
                raise DeadLink(f"no PONG within {deadline:g}s of a PING")
            elif ping_at is None and now - heard_at >= interval:
                link.send("PING")
                self.stats.incr("pings")
                ping_at = now

    def on_replies(self, replies: list[Reply]) -> int:
        """Handle the messages among what one read brought, in order; return how many
        subscribe confirmations were among them. Stopping ends it after the message in hand
        (the rest are dropped, and not counted as received: pub/sub is at-most-once)."""
        confirmed = handled = 0
        self._ages_ms.clear()
        received = self._by_channel(replies)
        if received:
            self.stats.incr_dests("received", received)
        try:
            for done, reply in enumerate(replies, 1):
                kind = reply[0]
                if kind == b"message":
                    handled += self.on_message(reply[1], reply[2])
                elif kind == b"pmessage":
                    handled += self.on_message(reply[2], reply[3])
                elif kind in _CONFIRMATIONS:
                    confirmed += 1
                elif isinstance(kind, redis.ResponseError):
                    raise kind
                if self.stopping.is_set():
                    # Read but never handed over: not received, as when redis-py held them.
                    unread = sum(self._by_channel(replies[done:], -1).values())
                    if unread:
                        log.info("subscriber %s: stopping with %d messages read, not handled",
                                 self.name, unread)  # fmt: skip
                    break
        finally:
            if handled:
                self.stats.incr("handled", handled)
            if self._ages_ms:
                self.stats.observe_latencies_ms(self._ages_ms)
        return confirmed

    def _by_channel(self, replies: list[Reply], sign: int = 1) -> dict[str, int]:
        """How many messages of each channel (bus names) ``replies`` hold; with ``sign`` -1,
        also taken back from ``received`` (read, never handed over). Returns counts >= 0."""
        counts: dict[bytes, int] = {}
        for r in replies:
            kind = r[0]
            if kind == b"message":
                counts[r[1]] = counts.get(r[1], 0) + 1
            elif kind == b"pmessage":
                counts[r[2]] = counts.get(r[2], 0) + 1
        named = {(self._names.get(c) or self._name_of(c)): n for c, n in counts.items()}
        if sign < 0 and named:
            self.stats.incr_dests("received", {c: -n for c, n in named.items()})
        return named

    def on_message(self, channel: bytes, data: bytes) -> int:
        """Account for one message and run the handler (1), or dead-letter it (0)."""
        name = self._names.get(channel)
        if name is None:
            name = self._name_of(channel)
        try:
            env = decode(data, default_mode="pubsub")
        except EnvelopeError as exc:
            log.warning("channel %s: garbage (%s, %d bytes)", name, exc, len(data))
            self._dead_letter(name, data, f"undecodable: {exc.reason}")
            return 0
        if env.ts:  # 0: the producer did not say when it sent it
            self._ages_ms.append(now_ms() - env.ts)  # to the stats once per read
        verdict = self.gaps.observe(env.src, name, env.seq)
        if verdict is not NOTHING:
            self._count_gap(verdict, name, env)
        try:
            self.handler(env)
        except Exception as exc:  # the handler's failure is data, not a reason to stop
            self.stats.incr("failed")
            log.warning("channel %s: handler failed on %s: %s", name, env.id, exc)
            self._dead_letter(name, data, f"handler failed: {exc!r}"[:2000])
            return 0
        return 1

    def _count_gap(self, verdict: Verdict, name: str, env: Envelope) -> None:
        if verdict.lost:
            self.stats.incr("lost", verdict.lost, name)
            if verdict.lost > 0:
                log.warning(
                    "channel %s: %d messages from %s lost before seq %d",
                    name,
                    verdict.lost,
                    env.src,
                    env.seq,
                )
        if verdict.out_of_order:
            self.stats.incr("out_of_order", 1, name)
        if verdict.duplicate:
            self.stats.incr("duplicates", 1, name)

    def _name_of(self, channel: bytes) -> str:
        """The bus name of a Redis channel, remembered (a pattern may match many: bounded)."""
        if len(self._names) >= MAX_NAMES:
            self._names.clear()
        name = self._names[channel] = keys.channel_name(channel.decode("utf-8", "replace"))
        return name

    def close_connections(self) -> None:
        if self.link is not None:
            self.stats.set_state(deaf_since_ms=now_ms())
        self.link = None
        if self.conn is not None and self.node is not None:
            self.conn.disconnect()
            self.node.connection_pool.release(self.conn)
            self.conn = None
        drop_connections(self.client)

    def _await_confirmations(self, link: SubscribedSocket) -> None:
        """Read the subscribe confirmations, so 'listening' means Redis registered us."""
        expected = len(self.channels) + len(self.patterns)
        confirmed = 0
        give_up = time.monotonic() + self.settings.pong_deadline_s
        while confirmed < expected:
            if time.monotonic() > give_up:
                raise DeadLink("no subscribe confirmation in time")
            replies = link.read(POLL_S)
            if replies:
                confirmed += self.on_replies(replies)

    def _dead_letter(self, channel: str, raw: bytes, reason: str) -> None:
        entry = dead_entry(raw, reason, channel=channel, subscriber=self.name)
        try:
            pipe = self.admin.pipeline(transaction=False)
            pipe.lpush(keys.channel_dead(channel), entry)
            if self.settings.dead_max:
                pipe.ltrim(keys.channel_dead(channel), 0, self.settings.dead_max - 1)
            pipe.execute()
            self.stats.incr("dead_lettered")
        except redis.RedisError as exc:
            log.error(
                "channel %s: could not dead-letter a message (%s): %r", channel, exc, raw[:200]
            )
