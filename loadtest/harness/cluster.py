"""A Redis Cluster of redis-server processes of its own on 127.0.0.1.

:class:`RedisCluster`: by default three primaries and three replicas (``redis-cli --cluster
create``), AOF on, a short node timeout so failovers take about a second; ``start()`` waits,
bounded, until every node agrees on the slot map, and ``kill()`` ends every process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtest.harness import slots
from loadtest.harness.ports import PortPicker
from loadtest.harness.server import CHECK_ERRORS, NO_SYNC_DELAY, RedisServer, Topology
from loadtest.harness.slots import NodeLine
from loadtest.harness.waits import FailoverTiming, wait_no_problems


class ClusterServer(RedisServer):
    """One node of the cluster: its own directory, nodes.conf, port and cluster bus port."""

    def __init__(self, workdir: Path, port: int, cluster_port: int, node_timeout_ms: int,
                 appendonly: bool = True) -> None:  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            workdir, *NO_SYNC_DELAY,
            "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
            "--cluster-port", str(cluster_port), "--cluster-node-timeout", str(node_timeout_ms),
            appendonly=appendonly, port=port,
        )  # fmt: skip
        self.cluster_port = cluster_port
        self._node_id: str | None = None

    @property
    def node_id(self) -> str:
        """The node's cluster id (CLUSTER MYID; kept in nodes.conf across restarts)."""
        if self._node_id is None:
            with self.admin() as c:
                self._node_id = str(c.execute_command("CLUSTER", "MYID"))
        return self._node_id

    def cluster_info(self) -> dict[str, str]:
        with self.admin() as c:
            return slots.info(c)

    def cluster_nodes(self) -> list[NodeLine]:
        with self.admin() as c:
            return slots.nodes_view(c)

    def __repr__(self) -> str:
        return f"<ClusterServer {self.address} {'up' if self.alive else 'down'}>"


class RedisCluster(Topology):
    """A Redis Cluster on loopback (3 primaries, a replica each, by default), each node in
    ``workdir/node-N``, with AOF unless ``appendonly`` is false."""

    def __init__(self, workdir: Path, primaries: int = 3, replicas_per_primary: int = 1,
                 node_timeout_ms: int = 1000, appendonly: bool = True) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        self.node_timeout_ms = node_timeout_ms
        self.replicas_per_primary = replicas_per_primary
        ports = PortPicker()
        count = primaries * (1 + replicas_per_primary)
        self.nodes: list[ClusterServer] = [
            ClusterServer(
                self.workdir / f"node-{i}", ports.take(), ports.take(), node_timeout_ms, appendonly
            )
            for i in range(count)
        ]

    # lifecycle

    def bring_up(self, timeout_s: float) -> None:
        """Start the nodes, join them with ``redis-cli --cluster create``, wait until ok."""
        for node in self.nodes:
            node.start()
        slots.create([n.address for n in self.nodes], self.replicas_per_primary, timeout_s)
        self.wait_ok(timeout_s)

    def servers(self) -> list[RedisServer]:
        """Every node."""
        return list(self.nodes)

    # topology

    def node(self, port: int) -> ClusterServer:
        for n in self.nodes:
            if n.port == port:
                return n
        raise LookupError(f"no node on port {port}")

    def live(self) -> list[ClusterServer]:
        return [n for n in self.nodes if n.alive]

    def view(self) -> list[NodeLine]:
        """CLUSTER NODES as the first live node that answers sees it."""
        for n in self.live():
            try:
                return n.cluster_nodes()
            except CHECK_ERRORS:
                continue
        raise RuntimeError("no cluster node answers")

    def _ask(self, *command: str) -> Any:
        for n in self.live():
            try:
                with n.admin() as c:
                    return c.execute_command(*command)
            except CHECK_ERRORS:
                continue
        raise RuntimeError("no cluster node answers")

    @property
    def primaries(self) -> list[ClusterServer]:
        """The nodes serving slots, as the cluster sees them now."""
        return [self.node(line.port) for line in self.view() if line.is_master and line.slots]

    @property
    def replicas(self) -> list[ClusterServer]:
        return [self.node(line.port) for line in self.view() if not line.is_master]

    @property
    def seeds(self) -> list[str]:
        """``127.0.0.1:port`` of the current primaries (startup nodes for a cluster client)."""
        return [n.address for n in self.primaries]

    def primary_for_slot(self, slot: int) -> ClusterServer:
        for start, end, master, *_ in self._ask("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return self.node(int(master[1]))
        raise LookupError(f"slot {slot} is not served")

    def keyslot(self, key: str) -> int:
        return int(self._ask("CLUSTER", "KEYSLOT", key))

    def primary_for_key(self, key: str) -> ClusterServer:
        return self.primary_for_slot(self.keyslot(key))

    def replica_of(self, primary: ClusterServer) -> ClusterServer:
        """A replica of ``primary`` (a live one when there is one)."""
        mine = [self.node(line.port) for line in self.view() if line.master_id == primary.node_id]
        if not mine:
            raise LookupError(f"{primary} has no replica")
        return next((n for n in mine if n.alive), mine[0])

    def master_of(self, replica: ClusterServer) -> ClusterServer:
        lines = self.view()
        master_id = next(line.master_id for line in lines if line.port == replica.port)
        return self.node(next(line.port for line in lines if line.node_id == master_id))

    # checks

    def problems(self) -> list[str]:
        """What keeps the cluster from being whole, as its live nodes see it
        (:func:`loadtest.harness.slots.problems`)."""
        return slots.problems([n.port for n in self.live()], len(self.nodes))

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Wait, bounded, until :meth:`problems` finds none."""
        wait_no_problems(self.problems, timeout_s, "the cluster to be ok and agreed")

    def failover(self, replica: ClusterServer, option: str | None = None,
                 timeout_s: float = 30.0) -> FailoverTiming:  # fmt: skip
        """CLUSTER FAILOVER [FORCE|TAKEOVER] on ``replica``; wait until it says it is master and
        the whole cluster agrees (the old primary, when alive, replicating it)."""
        old = self.master_of(replica)

        def agreed() -> list[str]:
            problems = self.problems()
            if not problems and old.alive and self.master_of(old) is not replica:
                problems.append(f"{old} does not replicate {replica}")
            return problems

        return slots.promote(replica.port, agreed, timeout_s, option)
