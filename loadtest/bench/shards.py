"""The Redis Clusters of the bench's cluster section: one of ``shards`` primaries and no replica
on free loopback ports, and queue names spread evenly over a cluster's shards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from loadtest.bench.common import RedisServer, free_port
from loadtest.cluster import SLOTS, create, wait_agreed
from producer import Settings, keys
from producer.connection.cluster import slot_of

NODE_TIMEOUT_MS = 15_000  # long: a node slowed by the load must not be marked failing
URL = "redis://127.0.0.1/0"  # on a cluster only the URL's credentials count (there are none)


def _node() -> RedisServer:
    """A cluster-enabled redis-server on free loopback ports (its own and its cluster bus's),
    nodes.conf in its own directory."""
    for attempt in range(3):
        bus_port = free_port()
        try:
            return RedisServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                               "--cluster-port", str(bus_port),
                               "--cluster-node-timeout", str(NODE_TIMEOUT_MS))  # fmt: skip
        except RuntimeError:  # exited at once: its two free ports were the same one
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class Cluster:
    """A Redis Cluster of ``shards`` primaries and no replica on loopback; waits, bounded,
    until every node says ``cluster_state:ok``, knows every other and sees the same slot map."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self.nodes: list[RedisServer] = []
        self.slot_map: list[tuple[int, int, int]] = []
        try:
            for _ in range(shards):
                self.nodes.append(_node())
            if shards == 1:
                client = self.nodes[0].client()
                try:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1)
                finally:
                    client.close()
            else:
                create(self.addresses, replicas=0)
            self.slot_map = wait_agreed([node.port for node in self.nodes], timeout_s=30)
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def owner(self, slot: int) -> int:
        """The index in :attr:`nodes` of the primary that holds ``slot`` (slots never move
        here: the map read once the cluster was ok)."""
        ports = [node.port for node in self.nodes]
        for first, last, port in self.slot_map:
            if first <= slot <= last:
                return ports.index(port)
        raise LookupError(f"slot {slot} is not served")

    def settings(self, queues: Sequence[str]) -> Settings:
        return Settings(redis_url=URL, cluster_nodes=tuple(self.addresses), queues=tuple(queues))

    def flushall(self) -> None:
        for node in self.nodes:
            client = node.client()
            try:
                client.flushall()
            finally:
                client.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@contextlib.contextmanager
def cluster(shards: int) -> Iterator[Cluster]:
    made = Cluster(shards)
    try:
        yield made
    finally:
        made.close()


def spread(three: Cluster, count: int) -> list[str]:
    """``count`` queue names whose keys lie evenly on ``three``'s shards, shard by shard."""
    per_shard = count // three.shards
    found: list[list[str]] = [[] for _ in three.nodes]
    for i in range(10_000):
        name = f"c{i}"
        mine = found[three.owner(slot_of(keys.pending(name)))]
        if len(mine) < per_shard:
            mine.append(name)
        if all(len(names) == per_shard for names in found):
            return [name for names in found for name in names]
    raise RuntimeError(f"no {per_shard} queue names found on each shard")
