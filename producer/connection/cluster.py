"""A Redis Cluster client made of plain per-node clients, routed by hash slot.

Every key of a queue carries the hash tag ``{q}`` and every key of the stats ``{stats}``, so
each command, script and pipeline of the bus touches one slot (one node) at a time. This client
sends each command to the primary that holds its key's slot, on a plain ``redis.Redis`` per
node made with the role's options (:mod:`producer.connection.client`): the same deadlines, no
retries, the same error semantics as on a single server. Code that needs one node (the
worker's pinned connection, the producer's careful resend, WAIT after a push, CLIENT LIST)
asks :meth:`ClusterClient.node_for` a key and works on that node's client.

What differs from one server, and how it is handled here:

- ``MOVED``: the slot has another owner (a failover, a resharding). The command did not run:
  the slot map is read again and the command goes to the new owner.
- ``ASK``: the slot is migrating; the command goes once to the target, after ``ASKING``.
- A connection error, ``CLUSTERDOWN``, ``TRYAGAIN``, ``READONLY`` or ``UNBLOCKED`` (a blocked
  pop on a primary that became a replica) is raised as it is, and the next command reads the
  slot map first: the caller's own recovery (the daemons' reconnect loop, the producer's 503)
  decides what to do, as on one server.
- ``SCRIPT LOAD`` goes to every primary, so a script registered once runs on any of them (a
  newly promoted primary answers ``NOSCRIPT`` until then; :class:`redis.commands.core.Script`
  loads it and retries, and pipelines check with ``SCRIPT EXISTS`` first).
- A pipeline is split by node and its replies put back in order; a transaction must stay on
  one node.
- Commands without a key that are about one node (``CLIENT``, ``WAIT``, ``INFO``, ``CONFIG``,
  ``SCAN`` without a hash tag in its pattern...) raise :class:`TypeError`: they go through
  :meth:`ClusterClient.node_for`. ``PING`` and ``TIME`` go to the node of the stats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from redis.client import Pipeline
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, MovedError

Address = tuple[str, int]

STATS_TAG = "{stats}"  # the hash tag of every stats key (producer/store/keys.py)
REFRESH_MIN_S = 0.1  # a stale map is read again at most this often
_REDIRECTS = 3  # MOVED/ASK followed per command before giving up

# Commands whose first key is not their first argument.
_NUMKEYS_AT = {"EVAL": 2, "EVALSHA": 2, "EVAL_RO": 2, "EVALSHA_RO": 2, "FCALL": 2,
               "FCALL_RO": 2, "LMPOP": 1, "ZMPOP": 1, "BLMPOP": 2, "BZMPOP": 2}  # fmt: skip
_ANY_NODE = frozenset(("PING", "TIME", "ECHO"))
_EVERY_PRIMARY = frozenset(("SCRIPT LOAD", "SCRIPT EXISTS", "SCRIPT FLUSH"))
# Errors after which the slot map may be out of date.
_STALE_PREFIXES = ("CLUSTERDOWN", "TRYAGAIN", "UNBLOCKED", "READONLY", "MASTERDOWN")


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (its ``{tag}`` when it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def _word(arg: Any) -> str:
    return (arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)).upper()


def command_key(args: tuple[Any, ...]) -> str | bytes | None:
    """The key that decides where ``args`` runs, or None for a command without one."""
    name = _word(args[0])
    rest = 1  # where the command's arguments start, after its name
    if name in ("SCRIPT", "CLIENT", "CLUSTER", "CONFIG", "MEMORY", "COMMAND", "FUNCTION",
                "PUBSUB", "OBJECT") and len(args) > 1:  # fmt: skip
        name, rest = f"{name} {_word(args[1])}", 2  # redis-py sends most as one word
    if name in _NUMKEYS_AT:
        at = _NUMKEYS_AT[name]
        return args[at + 1] if len(args) > at + 1 and int(args[at]) > 0 else None
    if name == "SCAN":  # routed by a hash tag in its MATCH pattern: the scan of one slot
        for i, arg in enumerate(args[:-1]):
            if _word(arg) == "MATCH" and "{" in _word(args[i + 1]):
                return args[i + 1]
        return None
    if name in ("MEMORY USAGE", "OBJECT ENCODING", "OBJECT FREQ", "OBJECT IDLETIME",
                "OBJECT REFCOUNT", "PUBSUB SHARDNUMSUB"):  # fmt: skip
        # The key of one, the subscribers of a sharded channel (one): on its node.
        return args[rest] if len(args) > rest else None
    if name in _ANY_NODE or name in _EVERY_PRIMARY or " " in name or len(args) < 2:
        return None
    if name in ("WAIT", "INFO", "DBSIZE", "KEYS", "FLUSHALL", "FLUSHDB", "RANDOMKEY",
                "MULTI", "EXEC", "DISCARD", "UNWATCH", "SAVE", "BGSAVE", "LASTSAVE"):  # fmt: skip
        return None
    return args[1]


def is_stale_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the slot map may have changed (see the module docstring)."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, MovedError)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_STALE_PREFIXES)


class ClusterClient(redis.Redis):
    """A client of a Redis Cluster: each command on the primary of its key's slot.

    ``seeds`` are some nodes; ``node_options`` the keyword arguments of each node's plain
    ``redis.Redis`` (timeouts, retries, credentials, TLS). Thread-safe, as a pooled client is.
    """

    def __init__(self, seeds: Iterable[Address], node_options: dict[str, Any]) -> None:
        # Not redis.Redis.__init__: this client has no pool of its own, only its nodes'.
        self._seeds = list(seeds)
        if not self._seeds:
            raise ValueError("a cluster client needs at least one node address")
        self._options = dict(node_options)
        self._nodes: dict[Address, redis.Redis] = {}
        self._slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._lock = threading.RLock()
        self._stale = True
        self._read_at = -REFRESH_MIN_S
        self.response_callbacks = {}  # type: ignore[assignment]
        self.refreshes = 0  # slot map reads that changed it (for logs and tests)

    def __repr__(self) -> str:
        return f"<ClusterClient seeds={self._seeds}>"

    @property
    def connection_pool(self) -> Any:  # type: ignore[override]
        """There is none: a pool belongs to one node (see :meth:`node_for`)."""
        raise AttributeError(
            "a cluster client has one pool per node: use node_for(key).connection_pool"
        )

    def get_encoder(self) -> Any:
        """The encoder of the nodes' connections (for :class:`Script`); connects nowhere."""
        return self._node(self._seeds[0]).get_encoder()

    # Routing.

    def node_for(self, key: str | bytes) -> redis.Redis:
        """The client of the primary that holds ``key``'s slot, reading the map first when it
        may be out of date."""
        slot = slot_of(key)
        self._refresh_if_stale()
        addr = self._slots[slot]
        if addr is None:
            self.invalidate()
            raise redis.exceptions.ClusterDownError(f"no node serves slot {slot} ({key!r})")
        return self._node(addr)

    def primaries(self) -> list[redis.Redis]:
        """A client of each primary that serves slots."""
        self._refresh_if_stale()
        return [self._node(a) for a in dict.fromkeys(a for a in self._slots if a is not None)]

    def invalidate(self) -> None:
        """Read the slot map again before the next command (after an error)."""
        self._stale = True

    def refresh(self) -> None:
        """Read the slot map now, from the first node that answers (known primaries, then the
        seeds); :class:`redis.ConnectionError` if none does."""
        with self._lock:
            self._read_at = time.monotonic()
            errors: list[str] = []
            candidates = list(dict.fromkeys([*self._known(), *self._seeds]))
            for addr in candidates:
                try:
                    reply = self._node(addr).execute_command("CLUSTER SLOTS")
                except redis.RedisError as exc:
                    errors.append(f"{addr[0]}:{addr[1]}: {exc}")
                    continue
                self._apply(reply, addr)
                self._stale = False
                return
            raise redis.ConnectionError(
                "no cluster node answered CLUSTER SLOTS (" + "; ".join(errors) + ")"
            )

    def _known(self) -> list[Address]:
        return list(dict.fromkeys(a for a in self._slots if a is not None))

    def _apply(self, reply: list[Any], asked: Address) -> None:
        slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            addr = (host if host and host != "?" else asked[0], int(primary[1]))
            slots[start : end + 1] = [addr] * (end - start + 1)
        if slots != self._slots:
            self.refreshes += 1
            gone = set(self._known()) - set(slots)
            self._slots = slots
            for addr in gone:  # a demoted or departed primary: its idle connections go (one
                node = self._nodes.get(addr)  # in use fails on its own, or ends its work)
                if node is not None:
                    node.connection_pool.disconnect(inuse_connections=False)

    def _refresh_if_stale(self) -> None:
        if not self._stale:
            return
        never_read = self._slots[0] is None and all(a is None for a in self._slots)
        if not never_read and time.monotonic() - self._read_at < REFRESH_MIN_S:
            return
        with self._lock:  # one thread reads the map; the others wait for it, then use it
            if not self._stale:
                return
            try:
                self.refresh()
            except redis.ConnectionError:
                if never_read:
                    raise  # nowhere to send anything
                # Keep the old map; the command fails or succeeds on its own.

    def _node(self, addr: Address) -> redis.Redis:
        node = self._nodes.get(addr)
        if node is None:
            with self._lock:
                node = self._nodes.get(addr)
                if node is None:
                    node = redis.Redis(host=addr[0], port=addr[1], **self._options)
                    self._nodes[addr] = node
        return node

    # Commands.

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command on the node that holds its key (see the module docstring)."""
        name = str(args[0]).upper()
        if len(args) > 1 and name == "SCRIPT":
            name = f"SCRIPT {str(args[1]).upper()}"
        if name == "PUBSUB NUMSUB":  # each node counts its own subscribers: the sum
            total = dict.fromkeys((c.encode() if isinstance(c, str) else c for c in args[1:]), 0)
            for node in self.primaries():
                for channel, count in node.execute_command(*args, **options):
                    total[channel] = total.get(channel, 0) + int(count)
            return list(total.items())
        if name in _EVERY_PRIMARY:
            replies = [n.execute_command(*args, **options) for n in self.primaries()]
            if name == "SCRIPT EXISTS":
                return [all(found) for found in zip(*replies, strict=True)]
            return replies[0]
        key = command_key(args)
        if key is None:
            if name in _ANY_NODE:
                return self._run(self.node_for(STATS_TAG), args, options)
            raise TypeError(
                f"{name} has no key to route it by on a cluster: send it to one node, "
                "through node_for(key)"
            )
        node = self.node_for(key)
        for _ in range(_REDIRECTS):
            try:
                return self._run(node, args, options)
            except AskError as ask:
                if isinstance(ask, MovedError):
                    self._moved(ask)
                    node = self.node_for(key)
                    continue
                pipe = self._node(ask.node_addr).pipeline(transaction=False)
                pipe.execute_command("ASKING")
                pipe.execute_command(*args, **options)
                return pipe.execute()[1]
        return self._run(node, args, options)

    def _run(self, node: redis.Redis, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        try:
            return node.execute_command(*args, **options)
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            if is_stale_error(exc) and not isinstance(exc, AskError):
                self.invalidate()
            raise

    def _moved(self, moved: MovedError) -> None:
        with self._lock:
            self._slots[moved.slot_id] = moved.node_addr
            self._stale = True
            self._read_at = -REFRESH_MIN_S  # read the whole map now: a failover moves many

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> RoutedPipeline:
        """A pipeline whose commands go to their keys' nodes, one pipeline per node."""
        return RoutedPipeline(self, transaction)

    def pubsub(self, **kwargs: Any) -> Any:
        """Subscriptions belong to a node: see :meth:`node_for`."""
        raise TypeError("on a cluster, subscribe on a node: node_for(channel).pubsub()")

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close every node's pooled connections (they reconnect on their next command)."""
        for node in list(self._nodes.values()):
            node.connection_pool.disconnect(inuse_connections)

    def close(self) -> None:
        """Close every node's connections."""
        with self._lock:
            for node in self._nodes.values():
                node.close()
            self._nodes.clear()
            self._slots = [None] * REDIS_CLUSTER_HASH_SLOTS
            self._stale = True

    def __del__(self) -> None:
        pass  # the nodes' clients close their own pools


class RoutedPipeline(Pipeline):
    """A pipeline on a cluster: commands are queued as in any pipeline, then sent as one
    pipeline per node (in the order their nodes first appear) and the replies put back in
    the order of the commands. A transaction may touch one node only."""

    def __init__(self, cluster: ClusterClient, transaction: bool) -> None:
        super().__init__(None, {}, transaction, None)  # type: ignore[arg-type]
        self._cluster = cluster
        self._multi = transaction

    def reset(self) -> None:  # type: ignore[override]
        """Forget the queued commands."""
        self.command_stack = []
        self.scripts = set()
        self.watching = False
        self.explicit_transaction = False

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands, by node; their replies in order."""
        stack, scripts = self.command_stack, self.scripts
        self.reset()
        if not stack:
            return []
        replies: list[Any] = [None] * len(stack)
        pending = list(range(len(stack)))
        refused: MovedError | None = None  # a transaction's, after its last redirect
        for _ in range(_REDIRECTS):
            groups: dict[int, tuple[redis.Redis, list[int]]] = {}
            for i in pending:
                key = command_key(stack[i][0])
                node = self._cluster.node_for(STATS_TAG if key is None else key)
                groups.setdefault(id(node), (node, []))[1].append(i)
            if self._multi and len(groups) > 1:
                raise redis.exceptions.ClusterCrossSlotError(
                    "a transaction on a cluster must stay on one node"
                )
            moved: list[int] = []
            for node, indexes in groups.values():
                pipe = node.pipeline(self._multi)
                pipe.command_stack = [stack[i] for i in indexes]
                pipe.scripts = set(scripts)
                try:
                    results = pipe.execute(raise_on_error=False)
                except MovedError as exc:  # a transaction refused whole (EXECABORT)
                    self._cluster._moved(exc)
                    refused = exc
                    moved = list(indexes)  # none of it ran: all of it to the new node
                    continue
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                    if is_stale_error(exc):
                        self._cluster.invalidate()
                    raise
                for i, result in zip(indexes, results, strict=True):
                    if isinstance(result, AskError) and not isinstance(result, MovedError):
                        result = self._asking(result, stack[i])
                    replies[i] = result
                    if isinstance(result, MovedError):
                        self._cluster._moved(result)
                        moved.append(i)
                    elif isinstance(result, Exception) and is_stale_error(result):
                        self._cluster.invalidate()
            if not moved:
                break
            pending = moved  # they did not run: to their new node
        if moved and refused is not None:
            raise refused
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    def _asking(self, ask: AskError, command: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        """One command of the pipeline once more, on the node its migrating slot is going to,
        after ASKING (-ASK: the key is not on the source any more); its reply or error."""
        args, options = command
        pipe = self._cluster._node(ask.node_addr).pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.execute_command(*args, **options)
        return pipe.execute(raise_on_error=False)[1]
