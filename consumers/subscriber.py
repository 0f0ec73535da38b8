"""The pub/sub subscriber: listens on channels and patterns, and notices when it is deaf.

It reads its connection in bulk (:mod:`producer.connection.resp`: every whole reply one ``recv``
brought, rather than redis-py's ``get_message``, one reply per call). After
``health_check_interval_s`` without traffic it sends a PING and expects the PONG (or any
message) within ``pong_deadline_s``. A miss drops the link; the reconnect loop
backs off, connects and resubscribes every channel and pattern. What was published meanwhile
is lost (pub/sub is at-most-once) and counted exactly from the producers' sequence numbers.
Garbage and handler failures go to the channel's capped dead list.
"""

from __future__ import annotations

import logging
import select
import time
from dataclasses import dataclass, field

import redis

from consumers.daemon import Daemon
from consumers.gaps import NOTHING, GapCounter, Verdict
from consumers.handlers import Handler
from producer import Envelope, EnvelopeError, Settings, SettingsError, decode, keys, make_client
from producer.connection.client import drop_connections, forget_routes, node_client
from producer.connection.resp import Reply, SubscribedSocket
from producer.errors import DeadLink
from producer.observe.stats import Stats
from producer.store.deadletters import dead_entry
from producer.store.envelope import now_ms

log = logging.getLogger(__name__)
POLL_S = 0.25  # how often the loop looks at the clock and the stop flag while idle
MAX_NAMES = 1000  # Redis channel names remembered with their bus names
NO_SHARDED_PATTERNS = (
    "patterns need classic pub/sub: sharded pub/sub (BUS_PUBSUB_MODE=sharded, or auto on a "
    "cluster) has none; set BUS_PUBSUB_MODE=classic to use them"
)
MOVED_WAIT_S = 2.0  # how long a moved channel waits for the slot map to name its new node
_CONFIRMATIONS = (b"subscribe", b"psubscribe", b"ssubscribe")


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
        self.sharded = settings.sharded_pubsub
        if self.sharded and patterns:
            raise SettingsError(NO_SHARDED_PATTERNS)
        self.links: list[_Link] = []  # the subscribed connections (one per node if sharded)
        self._moved: list[bytes] = []  # sharded channels Redis unsubscribed: their slot moved
        self._names: dict[bytes, str] = {}  # Redis channel -> bus name
        self._ages_ms: list[int] = []  # latencies of the messages of one read
        # Deaf until subscribed: since when, and how long a dead link may go unnoticed.
        deaf_after_s = settings.health_check_interval_s + settings.pong_deadline_s
        self.stats.set_state(
            deaf_since_ms=self.stats.started_ms, deaf_after_ms=int(deaf_after_s * 1000)
        )

    def serve(self) -> None:
        """Subscribe, then read messages and watch each link's PONG deadline until stopped."""
        links = self._open_links()
        self._await_confirmations(links)
        self.mark_connected()
        self.stats.set_state(deaf_since_ms=0)
        names = " ".join(self.channels + self.patterns)
        log.info("subscriber %s: listening on %s (%s)", self.name, names, _where(links))
        for link in links:
            link.heard_at = time.monotonic()
        interval = self.settings.health_check_interval_s
        deadline = self.settings.pong_deadline_s
        single = links[0] if len(links) == 1 else None
        while not self.stopping.is_set():
            if single is not None:
                got = [(single, single.sock.read(POLL_S))]
            else:  # one wait for all of them, then read those with bytes waiting
                ready = set(select.select(links, [], [], POLL_S)[0])
                got = [(link, link.sock.read(POLL_S)) for link in links if link in ready]
            now = time.monotonic()
            for link, replies in got:
                if replies is not None:  # any byte, even of an unfinished reply: it lives
                    link.heard_at, link.ping_at = now, None
                    if replies:
                        self.on_replies(replies)
            if self._moved:
                links = self._follow_moved(links)
                single = links[0] if len(links) == 1 else None
            for link in links:
                if link.ping_at is not None and now - link.ping_at > deadline:
                    self.stats.incr("deadline_misses")
                    raise DeadLink(f"no PONG from {link.address} within {deadline:g}s of a PING")
                if link.ping_at is None and now - link.heard_at >= interval:
                    link.sock.send("PING")
                    self.stats.incr("pings")
                    link.ping_at = now

    def _follow_moved(self, links: list[_Link]) -> list[_Link]:
        """Subscribe the channels whose slot left their node on the node that holds it now
        (a link to it, new if need be); a link left without channels is closed. The other
        links go on undisturbed. Its confirmation is read as any reply; a refusal (-MOVED)
        ends serve() and the reconnect starts over.

        The node that unsubscribed the channel knows first; the node asked for the slot map
        may still name it for a moment (the new configuration spreads by gossip): the map is
        read again, for at most ``MOVED_WAIT_S``, until it names another node."""
        moved, self._moved = self._moved, []
        forget_routes(self.client)
        for raw in moved:
            channel = raw.decode()
            left = {id(lk.node) for lk in links if channel in lk.channels}
            for link in links:
                link.channels.discard(channel)
            give_up = time.monotonic() + MOVED_WAIT_S
            node = node_client(self.client, channel)
            while id(node) in left and time.monotonic() < give_up:
                time.sleep(0.05)
                forget_routes(self.client)
                node = node_client(self.client, channel)
            found = next((lk for lk in links if lk.node is node), None)
            if found is None:
                found = _Link(node, SubscribedSocket.open(node), 0, time.monotonic())
                links.append(found)
            found.channels.add(channel)
            found.sock.send("SSUBSCRIBE", channel)
            self.stats.incr("reconnects")
            log.warning("subscriber %s: %s left its node: subscribed again on %s",
                        self.name, channel, found.address)  # fmt: skip
        for link in [lk for lk in links if not lk.channels]:  # sharded: no patterns
            link.sock.close()
            links.remove(link)
        return links

    def _open_links(self) -> list[_Link]:
        """Connect and send the subscriptions: one link, or with sharded pub/sub on a cluster
        one per node that holds some of the channels (each channel on its slot's node)."""
        groups: dict[int, tuple[redis.Redis, list[str]]] = {}
        if self.sharded:
            for channel in self.channels:
                node = node_client(self.client, channel)
                groups.setdefault(id(node), (node, []))[1].append(channel)
        else:  # on a cluster, any node: a PUBLISH reaches every node
            node = node_client(self.client, (self.channels or self.patterns)[0])
            groups[id(node)] = (node, self.channels)
        for node, channels in groups.values():
            link = _Link(node, SubscribedSocket.open(node), len(channels), channels=set(channels))
            self.links.append(link)  # closed by close_connections() whatever happens next
            if channels:
                link.sock.send("SSUBSCRIBE" if self.sharded else "SUBSCRIBE", *channels)
        if self.patterns:
            self.links[0].sock.send("PSUBSCRIBE", *self.patterns)
            self.links[0].expected += len(self.patterns)
        return self.links

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
                if kind == b"message" or kind == b"smessage":
                    handled += self.on_message(reply[1], reply[2])
                elif kind == b"pmessage":
                    handled += self.on_message(reply[2], reply[3])
                elif kind in _CONFIRMATIONS:
                    confirmed += 1
                elif kind == b"sunsubscribe":
                    # Not asked for: the channel's slot left the node (a failover, a slot
                    # migration). serve() subscribes it again where it is now.
                    self._moved.append(reply[1])
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
            if kind == b"message" or kind == b"smessage":
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
        if self.links:
            self.stats.set_state(deaf_since_ms=now_ms())
        for link in self.links:
            link.sock.close()
        self.links = []
        self._moved = []
        drop_connections(self.client)

    def _await_confirmations(self, links: list[_Link]) -> None:
        """Read the subscribe confirmations, so 'listening' means Redis registered us."""
        give_up = time.monotonic() + self.settings.pong_deadline_s
        for link in links:
            confirmed = 0
            while confirmed < link.expected:
                if time.monotonic() > give_up:
                    raise DeadLink(f"no subscribe confirmation from {link.address} in time")
                replies = link.sock.read(POLL_S)
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


@dataclass(eq=False)
class _Link:
    """One subscribed connection: its node, what it waits for, and its PING/PONG clock."""

    node: redis.Redis
    sock: SubscribedSocket
    expected: int  # subscribe confirmations to read
    heard_at: float = 0.0
    ping_at: float | None = None
    channels: set[str] = field(default_factory=set)  # sharded: those subscribed on it

    @property
    def address(self) -> str:
        return self.sock.address

    def fileno(self) -> int:
        return self.sock.fileno()


def _where(links: list[_Link]) -> str:
    return ", ".join(link.address for link in links)
