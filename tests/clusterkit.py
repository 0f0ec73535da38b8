"""Helpers of the Redis Cluster tests: queues placed on distinct shards, the bus's settings and
environment for a cluster, and a producer thread that pushes to several queues and notes the
outcome of each push (for the exact accounting of a failover)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.harness.cluster import ClusterServer, RedisCluster
from loadtest.harness.server import redis_cli_binary
from producer import NotReplicated, Producer, Settings, Unconfirmed, keys, make_client
from producer.connection.cluster import ClusterClient
from tests.conftest import quick_settings

URL = "redis://127.0.0.1:1/0"  # on a cluster only the credentials of the URL are used
# A script: appends ARGV[1] to the list KEYS[1] and returns its length.
PUSH_LEN = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"


def start_cluster(workdir: Path) -> Iterator[RedisCluster]:
    """The body of a ``cluster`` fixture: 3 primaries, 3 replicas, killed at teardown."""
    if redis_cli_binary() is None:
        pytest.fail("redis-cli is missing: the bootstrap installs redis-server, which has it")
    topo = RedisCluster(workdir).start()
    try:
        yield topo
    finally:
        topo.kill()


def queues_on_shards(topo: RedisCluster, count: int, prefix: str = "q") -> list[str]:
    """``count`` queue names whose keys live on ``count`` different primaries."""
    return names_on_shards(topo, count, prefix, keys.pending)


def channels_on_shards(topo: RedisCluster, count: int, prefix: str = "ch") -> list[str]:
    """``count`` channel names whose slots are on ``count`` different primaries."""
    return names_on_shards(topo, count, prefix, keys.channel)


def names_on_shards(topo: RedisCluster, count: int, prefix: str,
                    key: Callable[[str], str]) -> list[str]:  # fmt: skip
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"{prefix}{i}"
        port = topo.primary_for_key(key(name)).port
        found.setdefault(port, name)
        if len(found) == count:
            return list(found.values())
    raise AssertionError(f"no {count} shards found for queues")


def bus_env(topo: RedisCluster, queues: Iterable[str] = ("default",),
            channels: Iterable[str] = ("default",)) -> dict[str, str]:  # fmt: skip
    return {"BUS_CLUSTER_NODES": ",".join(topo.seeds[:2]), "BUS_QUEUES": ",".join(queues),
            "BUS_CHANNELS": ",".join(channels)}  # fmt: skip


def bus_settings(topo: RedisCluster, **overrides: object) -> Settings:
    return quick_settings(URL, cluster_nodes=tuple(topo.seeds[:2]), **overrides)


def shard_subscribers(topo: RedisCluster, channel: str) -> int:
    """Sharded subscribers of ``channel`` on the primary that holds its slot."""
    with topo.primary_for_key(keys.channel(channel)).admin() as c:
        ((_, count),) = c.pubsub_shardnumsub(keys.channel(channel))
        return int(count)


def cluster_clients(name: str) -> Iterator[Callable[..., ClusterClient]]:
    """The body of a ``connect`` fixture: ``connect(topo)`` is an admin-role client named
    ``name`` as ``make_client`` builds it from the bus's settings for ``topo``;
    ``connect(seeds=(...))`` the same with BUS_CLUSTER_NODES ``seeds``. Every one is closed at
    teardown."""
    made: list[ClusterClient] = []

    def make(topo: RedisCluster | None = None, seeds: tuple[str, ...] = ()) -> ClusterClient:
        if topo is not None:
            settings = bus_settings(topo)
        else:
            settings = quick_settings(URL, cluster_nodes=seeds)
        client = make_client(settings, "admin", name)
        assert isinstance(client, ClusterClient)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def stored(node: ClusterServer, queue: str) -> list[str]:
    """``queue``'s pending list as ``node`` itself holds it (read there, not through a client
    under test)."""
    with node.admin() as c:
        return list(c.lrange(keys.pending(queue), 0, -1))


def keys_in_slot(node: ClusterServer, slot: int) -> int:
    with node.admin() as c:
        return int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def port_of(client: redis.Redis) -> int:
    """The port of a plain client (a node's, from ``node_client``)."""
    return int(client.connection_pool.connection_kwargs["port"])


@contextlib.contextmanager
def slot_migrating(
    topo: RedisCluster, queue: str, toward: str
) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """``queue``'s slot MIGRATING from its primary to the primary of ``toward`` (IMPORTING
    there): admin clients of (source, target). On the way out the target forgets ``queue``'s
    dead list (the key these tests send there) and the slot is STABLE again on both."""
    source = topo.primary_for_key(keys.pending(queue))
    target = topo.primary_for_key(keys.pending(toward))
    slot = topo.keyslot(keys.pending(queue))
    with source.admin() as s, target.admin() as t:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        try:
            yield s, t
        finally:
            asking(t, "DEL", keys.dead(queue))
            for node in (t, s):
                node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def asking(node: redis.Redis, *command: Any) -> Any:
    """``command`` on ``node`` right after ASKING (a key of a slot it is importing)."""
    pipe = node.pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.execute_command(*command)
    return pipe.execute()[1]


def depth(topo: RedisCluster, queue: str) -> int:
    """Pending messages of ``queue``, asked of the primary that holds it now."""
    with topo.primary_for_key(keys.pending(queue)).admin() as c:
        return int(c.llen(keys.pending(queue)))


class Stream:
    """Pushes ``{"n": i}`` round-robin to ``queues`` (or publishes on them as channels, with
    ``publish``) every ``every_s`` until stopped, noting each one's outcome by id (confirmed,
    not-replicated, unconfirmed) and when it was confirmed; one refused before it was sent is
    only counted."""

    def __init__(self, producer: Producer, queues: list[str], every_s: float = 0.005,
                 publish: bool = False) -> None:  # fmt: skip
        self.producer = producer
        self.queues = queues
        self.send = producer.publish if publish else producer.push
        self.every_s = every_s
        self.outcomes: dict[str, str] = {}
        self.queue_of: dict[str, str] = {}
        self.confirmed_at: dict[str, float] = {}
        self.sent_at: dict[str, float] = {}  # when each push with an outcome was made
        self.refused: Counter[str] = Counter()
        self._at = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stop.wait(self.every_s):
            n += 1
            queue = self.queues[n % len(self.queues)]
            self._at = time.monotonic()
            try:
                sent = self.send({"n": n}, queue)
                self._note(sent.envelope.id, queue, "confirmed")
                self.confirmed_at[sent.envelope.id] = time.monotonic()
            except NotReplicated as exc:
                self._note(exc.envelopes[0].id, queue, "not-replicated")
            except Unconfirmed as exc:
                self._note(exc.envelopes[0].id, queue, "unconfirmed")
            except redis.RedisError as exc:
                self.refused[type(exc).__name__] += 1

    def _note(self, msg_id: str, queue: str, outcome: str) -> None:
        self.outcomes[msg_id] = outcome
        self.queue_of[msg_id] = queue
        self.sent_at[msg_id] = self._at

    def ids(self, outcome: str, queue: str | None = None) -> set[str]:
        return {
            i
            for i, o in self.outcomes.items()
            if o == outcome and (queue is None or self.queue_of[i] == queue)
        }

    def run_for(self, seconds: float) -> None:
        self.thread.start()
        time.sleep(seconds)
        self.stop.set()
        self.thread.join(10)
