"""A Redis Cluster of real redis-server processes on 127.0.0.1, for tests.

:class:`RedisCluster`: three primaries and three replicas (``redis-cli --cluster create``), AOF on,
a short node timeout so failovers take about a second; ``start()`` waits, bounded, until every
node agrees on the slot map, and ``kill()`` ends every process.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.topology import (
    CHECK_ERRORS,
    SLOTS,
    FailoverTiming,
    Node,
    PortPicker,
    end_all,
    redis_cli_binary,
    wait_until,
)


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    link: str
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @classmethod
    def parse(cls, line: str) -> NodeLine:
        parts = line.split()
        address = parts[1].split(",")[0].split("@")[0]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):
                continue  # a slot being imported or migrated
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        port = int(address.rpartition(":")[2])
        master_id = None if parts[3] == "-" else parts[3]
        flags = frozenset(parts[2].split(","))
        return cls(parts[0], port, flags, master_id, parts[7], tuple(sorted(slots)))


class ClusterServer(Node):
    """One node of the cluster: its own directory, nodes.conf, port and cluster bus port."""

    def __init__(self, workdir: Path, port: int, cluster_port: int, node_timeout_ms: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            workdir, port,
            "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
            "--cluster-port", str(cluster_port), "--cluster-node-timeout", str(node_timeout_ms),
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
            text = str(c.execute_command("CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def cluster_nodes(self) -> list[NodeLine]:
        with self.admin() as c:
            text = str(c.execute_command("CLUSTER", "NODES"))
        return [NodeLine.parse(line) for line in text.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"<ClusterServer {self.address} {'up' if self.alive else 'down'}>"


class RedisCluster:
    """A 3-primary, 3-replica Redis Cluster on loopback, each node in ``workdir/node-N``."""

    def __init__(self, workdir: Path, primaries: int = 3, replicas_per_primary: int = 1,
                 node_timeout_ms: int = 1000) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        self.node_timeout_ms = node_timeout_ms
        self.replicas_per_primary = replicas_per_primary
        ports = PortPicker()
        count = primaries * (1 + replicas_per_primary)
        self.nodes: list[ClusterServer] = [
            ClusterServer(self.workdir / f"node-{i}", ports.take(), ports.take(), node_timeout_ms)
            for i in range(count)
        ]
        self.create_output = ""

    # lifecycle

    def start(self, timeout_s: float = 30.0) -> RedisCluster:
        """Start the nodes, join them with ``redis-cli --cluster create``, wait until ok."""
        cli = redis_cli_binary()
        assert cli, "redis-cli is not installed"
        try:
            for node in self.nodes:
                node.start()
            replicas = str(self.replicas_per_primary)
            cmd = [cli, "--cluster", "create", *(n.address for n in self.nodes),
                   "--cluster-replicas", replicas, "--cluster-yes"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            self.create_output = done.stdout + done.stderr
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{self.create_output}")
            self.wait_ok(timeout_s)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every node (SIGKILL when one does not go)."""
        end_all(self.nodes, graceful=True)

    def kill(self) -> None:
        """SIGKILL every node."""
        end_all(self.nodes, graceful=False)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.kill()

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
        """What keeps the cluster from being whole: every live node ``cluster_state:ok``, knowing
        every node, all slots covered; every live node's CLUSTER NODES agreeing on who is master
        of which slots and who replicates whom, none of them failing; live replicas in sync."""
        found: list[str] = []
        shapes: dict[int, frozenset[tuple[int, str, tuple[tuple[int, int], ...]]]] = {}
        live = self.live()
        live_ports = {n.port for n in live}
        for n in live:
            try:
                info = n.cluster_info()
                lines = n.cluster_nodes()
            except CHECK_ERRORS as e:
                found.append(f"{n.port}: {e!r}")
                continue
            if info.get("cluster_state") != "ok":
                found.append(f"{n.port}: cluster_state {info.get('cluster_state')}")
            if int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                found.append(f"{n.port}: knows {info.get('cluster_known_nodes')} nodes")
            for key in ("cluster_slots_assigned", "cluster_slots_ok"):
                if int(info.get(key, 0)) != SLOTS:
                    found.append(f"{n.port}: {key} {info.get(key)}")
            ids = {line.node_id: line.port for line in lines}
            shape = frozenset(
                (line.port, "master" if line.is_master else f"of {ids.get(line.master_id or '')}",
                 line.slots)
                for line in lines
            )  # fmt: skip
            shapes[n.port] = shape
            failing = [line.port for line in lines if line.failing and line.port in live_ports]
            if failing:
                found.append(f"{n.port} sees live nodes {failing} failing")
        if len(set(shapes.values())) > 1:
            found.append(f"views differ: {shapes}")
        if found:
            return found
        for n in live:
            try:
                repl = n.replication()
            except CHECK_ERRORS as e:
                found.append(f"{n.port}: {e!r}")
                continue
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                found.append(f"{n.port}: link to its master {repl.get('master_link_status')}")
        return found

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Wait, bounded, until :meth:`problems` finds none."""
        wait_until(self.problems, timeout_s, "the cluster to be ok and agreed")

    def failover(self, replica: ClusterServer, option: str | None = None,
                 timeout_s: float = 30.0) -> FailoverTiming:  # fmt: skip
        """CLUSTER FAILOVER [FORCE|TAKEOVER] on ``replica``; wait until it says it is master and
        the whole cluster agrees (the old primary, when alive, replicating it)."""
        old = self.master_of(replica)
        started = time.monotonic()
        with replica.admin() as c:
            c.execute_command("CLUSTER", "FAILOVER", *([option] if option else []))
        wait_until(lambda: [] if replica.role == "master" else [f"{replica} is {replica.role}"],
                   timeout_s, f"{replica} to become master")  # fmt: skip
        promoted = time.monotonic() - started

        def agreed() -> list[str]:
            problems = self.problems()
            if not problems and old.alive and self.master_of(old) is not replica:
                problems.append(f"{old} does not replicate {replica}")
            return problems

        wait_until(agreed, timeout_s, "the cluster to agree on the failover")
        return FailoverTiming(promoted, time.monotonic() - started)
