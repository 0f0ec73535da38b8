"""The Redis Clusters of the bench's cluster section: one of ``shards`` primaries and no replica
on free loopback ports, and queue names spread evenly over a cluster's shards.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from loadtest.harness import slots
from loadtest.harness.cluster import ClusterServer, RedisCluster
from producer import Settings, keys
from producer.connection.cluster import slot_of

NODE_TIMEOUT_MS = 15_000  # long: a node slowed by the load must not be marked failing
URL = "redis://127.0.0.1/0"  # on a cluster only the URL's credentials count (there are none)


class Cluster:
    """A Redis Cluster of ``shards`` primaries and no replica on loopback, no persistence, in
    ``workdir``; started, and waited on until its nodes agree (:mod:`loadtest.harness.cluster`)."""

    def __init__(self, shards: int, workdir: Path) -> None:
        self.shards = shards
        self.topo = RedisCluster(
            workdir, shards, replicas_per_primary=0, node_timeout_ms=NODE_TIMEOUT_MS,
            appendonly=False,
        ).start()  # fmt: skip
        self.nodes: list[ClusterServer] = self.topo.nodes
        with slots.node(self.nodes[0].port) as client:
            self.slot_map = slots.slot_map(client)

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
        self.topo.kill()


@contextlib.contextmanager
def cluster(shards: int) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        made = Cluster(shards, Path(tmp))
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
