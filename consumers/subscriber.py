"""The pub/sub subscriber: listens on channels and patterns, and notices when it is deaf.

It polls ``get_message(timeout=...)``. After ``health_check_interval_s`` without traffic it
sends a PING and expects the PONG (or any message) within ``pong_deadline_s``; redis-py only
sends the PING, so the deadline is enforced here. A miss drops the link; the reconnect loop
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
from consumers.gaps import GapCounter
from consumers.handlers import Handler
from producer import EnvelopeError, Settings, decode, keys, make_client
from producer.deadletters import dead_entry
from producer.stats import Stats

log = logging.getLogger(__name__)
POLL_S = 0.25  # how often the loop looks at the clock and the stop flag while idle


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
        self.pubsub: Any = None

    def serve(self) -> None:
        """Subscribe, then read messages and watch the PONG deadline until stopped."""
        self.pubsub = self.client.pubsub()
        if self.channels:
            self.pubsub.subscribe(*self.channels)
        if self.patterns:
            self.pubsub.psubscribe(*self.patterns)
        self._await_confirmations()
        self.mark_connected()
        log.info(
            "subscriber %s: listening on %s", self.name, " ".join(self.channels + self.patterns)
        )
        heard_at = time.monotonic()
        ping_at: float | None = None
        interval = self.settings.health_check_interval_s
        deadline = self.settings.pong_deadline_s
        while not self.stopping.is_set():
            msg = self.pubsub.get_message(timeout=POLL_S)
            now = time.monotonic()
            if msg is not None:
                heard_at, ping_at = now, None
                if msg["type"] in ("message", "pmessage"):
                    self.on_message(msg["channel"], msg["data"])
            elif ping_at is not None and now - ping_at > deadline:
                self.stats.incr("deadline_misses")
                raise DeadLink(f"no PONG within {deadline:g}s of a PING")
            elif ping_at is None and now - heard_at >= interval:
                self.pubsub.ping()
                self.stats.incr("pings")
                ping_at = now

    def on_message(self, channel: bytes, data: bytes) -> None:
        """Account for one message, run the handler, dead-letter what fails."""
        self.stats.incr("received")
        name = keys.channel_name(channel.decode("utf-8", "replace"))
        try:
            env = decode(data, default_mode="pubsub")
        except EnvelopeError as exc:
            log.warning("channel %s: garbage (%s, %d bytes)", name, exc, len(data))
            self._dead_letter(name, data, f"undecodable: {exc.reason}")
            return
        if env.ts:  # 0: the producer did not say when it sent it
            self.stats.observe_latency_ms(env.age_ms())
        verdict = self.gaps.observe(env.src, name, env.seq)
        if verdict.lost:
            self.stats.incr("lost", verdict.lost)
            if verdict.lost > 0:
                log.warning(
                    "channel %s: %d messages from %s lost before seq %d",
                    name,
                    verdict.lost,
                    env.src,
                    env.seq,
                )
        if verdict.out_of_order:
            self.stats.incr("out_of_order")
        if verdict.duplicate:
            self.stats.incr("duplicates")
        try:
            self.handler(env)
        except Exception as exc:  # the handler's failure is data, not a reason to stop
            self.stats.incr("failed")
            log.warning("channel %s: handler failed on %s: %s", name, env.id, exc)
            self._dead_letter(name, data, f"handler failed: {exc!r}"[:2000])
            return
        self.stats.incr("handled")

    def close_connections(self) -> None:
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None
        self.client.connection_pool.disconnect()

    def _await_confirmations(self) -> None:
        """Read the subscribe confirmations, so 'listening' means Redis registered us."""
        expected = len(self.channels) + len(self.patterns)
        confirmed = 0
        give_up = time.monotonic() + self.settings.pong_deadline_s
        while confirmed < expected:
            if time.monotonic() > give_up:
                raise DeadLink("no subscribe confirmation in time")
            msg = self.pubsub.get_message(timeout=POLL_S)
            if msg is None:
                continue
            if msg["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
            elif msg["type"] in ("message", "pmessage"):
                self.on_message(msg["channel"], msg["data"])

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
