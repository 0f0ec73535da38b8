"""Redis Cluster and Sentinel topologies of real redis-server processes on 127.0.0.1, for tests.

:class:`RedisCluster`: three primaries and three replicas (``redis-cli --cluster create``), AOF on,
a short node timeout so failovers take about a second. :class:`RedisSentinel`: a primary, its
replica and three sentinels monitoring them as ``bus``. Every process is a :class:`RedisServer`
of its own directory (kill -9, SIGSTOP/SIGCONT, restart on the same port and data); ``start()``
waits, bounded, until the topology is whole and agreed on, and ``kill()`` ends every process.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from tests.redisproc import RedisServer, free_port, redis_binary

HOST = "127.0.0.1"
SLOTS = 16384
CHECK_ERRORS = (redis.RedisError, OSError)


def redis_cli_binary() -> str | None:
    """Path of redis-cli, or None."""
    return shutil.which("redis-cli")


class PortPicker:
    """Free loopback ports, none handed out twice (a cluster needs 12 at once)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def take(self) -> int:
        for _ in range(100):
            port = free_port()
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise RuntimeError("no distinct free port found")


def wait_until(check: Callable[[], list[str]], timeout_s: float, what: str) -> None:
    """Poll ``check`` (the problems still in the way) until it returns none; fail after
    ``timeout_s`` naming ``what`` and the last problems seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {problems}")
        time.sleep(0.05)


@dataclass
class FailoverTiming:
    """How long a failover took: until the new primary said so, and until all agreed."""

    promoted_s: float
    total_s: float

    def __str__(self) -> str:
        return f"promoted {self.promoted_s:.3f}s, converged {self.total_s:.3f}s"


class Node(RedisServer):
    """A redis-server of a topology: tracks SIGSTOP so checks skip it instead of hanging."""

    def __init__(self, workdir: Path, port: int, *args: str, appendonly: bool = True) -> None:
        # A primary waits repl-diskless-sync-delay (5 s by default) for more replicas before a
        # full sync; no replica here comes that late.
        more = ("--repl-diskless-sync-delay", "0") if appendonly else ()
        super().__init__(workdir, *more, *args, appendonly=appendonly)
        self.port = port
        self.paused = False

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.proc

    @property
    def alive(self) -> bool:
        """Running and not stopped by SIGSTOP."""
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def admin(self) -> redis.Redis:
        """A client with short timeouts that decodes replies."""
        return self.client(decode_responses=True, socket_timeout=2, socket_connect_timeout=1)

    @property
    def role(self) -> str | None:
        """ROLE as the node itself says (``master``, ``slave``, ``sentinel``); None when down."""
        if not self.alive:
            return None
        try:
            with self.admin() as c:
                return str(c.execute_command("ROLE")[0])
        except CHECK_ERRORS:
            return None

    def replication(self) -> dict[str, Any]:
        with self.admin() as c:
            return dict(c.info("replication"))

    def pause(self) -> None:
        super().pause()
        self.paused = True

    def resume(self) -> None:
        super().resume()
        self.paused = False

    def start(self) -> Node:
        self.paused = False
        super().start()
        return self

    def kill(self) -> None:
        super().kill()
        self.paused = False

    def stop(self) -> None:
        try:
            super().stop()
        except subprocess.TimeoutExpired:
            super().kill()
        self.paused = False


def end_all(nodes: Iterable[Node], graceful: bool) -> None:
    """Stop (SIGTERM) or kill (SIGKILL) every node, each tried even when another fails."""
    errors: list[BaseException] = []
    for node in nodes:
        try:
            node.stop() if graceful else node.kill()
        except BaseException as e:
            errors.append(e)
            try:
                node.kill()
            except BaseException as again:
                errors.append(again)
    if errors:
        raise errors[0]


# -- Redis Cluster ------------------------------------------------------------------------------


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


# -- Sentinel -----------------------------------------------------------------------------------


class DataServer(Node):
    """A primary or replica under Sentinel. On (re)start it replicates whatever the sentinels
    name as master, unless that is itself or no sentinel answers (``master_port`` asks them)."""

    def __init__(self, workdir: Path, port: int, master_port: Callable[[], int | None]) -> None:
        super().__init__(workdir, port)
        self.master_port = master_port
        self.base_args = list(self.args)

    def start(self) -> DataServer:
        master = self.master_port()
        follow = [] if master in (None, self.port) else ["--replicaof", HOST, str(master)]
        self.args = [*self.base_args, *follow]
        super().start()
        return self

    def __repr__(self) -> str:
        return f"<DataServer {self.address} {'up' if self.alive else 'down'}>"


class SentinelServer(Node):
    """``redis-server sentinel.conf --sentinel``; the conf is its own (sentinels rewrite it) and
    is written once, so a restart keeps what the sentinel learned."""

    def __init__(self, workdir: Path, port: int, conf_lines: list[str]) -> None:
        super().__init__(workdir, port, appendonly=False)
        self.conf = self.workdir / "sentinel.conf"
        self.conf_lines = conf_lines

    def start(self) -> SentinelServer:
        binary = redis_binary()
        assert binary, "redis-server is not installed"
        if not self.conf.exists():
            head = [f"port {self.port}", f"bind {HOST}", f"dir {self.workdir}",
                    f"logfile {self.workdir / 'sentinel.log'}"]  # fmt: skip
            self.conf.write_text("\n".join(head + self.conf_lines) + "\n")
        self.paused = False
        cmd = [binary, str(self.conf), "--sentinel"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def __repr__(self) -> str:
        return f"<SentinelServer {self.address} {'up' if self.alive else 'down'}>"


class RedisSentinel:
    """A primary, one replica and three sentinels (quorum 2) monitoring them as ``bus``."""

    master_name = "bus"

    def __init__(self, workdir: Path, sentinels: int = 3, quorum: int = 2,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        ports = PortPicker()
        first, second = ports.take(), ports.take()
        self._initial_master = first
        self.data_nodes: list[DataServer] = [
            DataServer(self.workdir / "data-0", first, self._master_port_for_start),
            DataServer(self.workdir / "data-1", second, self._master_port_for_start),
        ]
        name = self.master_name
        conf = [f"sentinel monitor {name} {HOST} {first} {quorum}",
                f"sentinel down-after-milliseconds {name} {down_after_ms}",
                f"sentinel failover-timeout {name} {failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1"]  # fmt: skip
        self.sentinel_servers: list[SentinelServer] = [
            SentinelServer(self.workdir / f"sentinel-{i}", ports.take(), conf)
            for i in range(sentinels)
        ]
        self._started = False

    # lifecycle

    def start(self, timeout_s: float = 30.0) -> RedisSentinel:
        """Start the primary, the replica (wait until in sync), the sentinels; wait until ready."""
        try:
            for node in self.data_nodes:
                node.start()
            self._started = True
            first = self.data_nodes[0]
            wait_until(lambda: self._replica_problems(first), timeout_s, "the replica to sync")
            for s in self.sentinel_servers:
                s.start()
            self.wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every process (SIGKILL when one does not go), the sentinels first."""
        end_all([*self.sentinel_servers, *self.data_nodes], graceful=True)

    def kill(self) -> None:
        """SIGKILL every process."""
        end_all([*self.sentinel_servers, *self.data_nodes], graceful=False)

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.kill()

    # topology

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of every sentinel, for ``redis.sentinel.Sentinel``."""
        return [(HOST, s.port) for s in self.sentinel_servers]

    def node(self, port: int) -> DataServer:
        for n in self.data_nodes:
            if n.port == port:
                return n
        raise LookupError(f"no data node on port {port}")

    def _master_port_for_start(self) -> int | None:
        if not self._started:
            return self._initial_master
        try:
            return self.master_address()[1]
        except RuntimeError:
            return None

    def _named_master(self, sentinel: SentinelServer) -> tuple[int, int]:
        """The master's port by GET-MASTER-ADDR-BY-NAME and by SENTINEL MASTER. They differ
        during a failover: the first names the promoted replica, the second (which redis-py's
        ``Sentinel.discover_master`` reads) the old master until the switch."""
        with sentinel.admin() as c:
            _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            state = c.sentinel_master(self.master_name)
        return int(port), int(state["port"])

    def master_address(self) -> tuple[str, int]:
        """SENTINEL GET-MASTER-ADDR-BY-NAME bus, from the first sentinel that answers."""
        for s in self.sentinel_servers:
            if not s.alive:
                continue
            try:
                with s.admin() as c:
                    host, port = c.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
                return str(host), int(port)
            except (*CHECK_ERRORS, TypeError, ValueError):
                continue
        raise RuntimeError("no sentinel names a master")

    def primary(self) -> DataServer:
        """The data node the sentinels name as master now."""
        return self.node(self.master_address()[1])

    def replica(self) -> DataServer:
        """The other data node."""
        master = self.master_address()[1]
        return next(n for n in self.data_nodes if n.port != master)

    # checks

    def _replica_problems(self, master: DataServer) -> list[str]:
        found: list[str] = []
        if master.role != "master":
            found.append(f"{master} is {master.role}, not master")
        for n in self.data_nodes:
            if n is master or not n.alive:
                continue
            try:
                repl = n.replication()
            except CHECK_ERRORS as e:
                found.append(f"{n}: {e!r}")
                continue
            if repl.get("role") != "slave" or repl.get("master_port") != master.port:
                found.append(f"{n} is {repl.get('role')} of {repl.get('master_port')}")
            elif repl.get("master_link_status") != "up":
                found.append(f"{n}: link to {master.port} {repl.get('master_link_status')}")
        return found

    def problems(self) -> list[str]:
        """What keeps the set-up from being ready: every live sentinel naming the same master,
        seeing it up (flags ``master``), knowing the other sentinels and the live replica (in
        sync by its own INFO); the master saying it is master, the replica replicating it."""
        found: list[str] = []
        masters: set[int] = set()
        name = self.master_name
        others = len(self.sentinel_servers) - 1
        for s in self.sentinel_servers:
            if not s.alive:
                continue
            try:
                with s.admin() as c:
                    _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
                    state = c.sentinel_master(name)
                    peers = c.sentinel_sentinels(name)
                    replicas = c.sentinel_slaves(name)
            except (*CHECK_ERRORS, TypeError, ValueError) as e:
                found.append(f"sentinel {s.port}: {e!r}")
                continue
            masters.update((int(port), int(state["port"])))
            flags = state.get("flags")
            if flags != {"master"} and flags != "master":
                found.append(f"sentinel {s.port}: master flags {flags}")
            if len(peers) != others:
                found.append(f"sentinel {s.port} knows {len(peers)} other sentinels")
            seen = {int(r["port"]): r for r in replicas}
            for n in self.data_nodes:
                if n.port == int(port) or not n.alive:
                    continue
                r = seen.get(n.port)
                if r is None:
                    found.append(f"sentinel {s.port} does not list replica {n.port}")
                elif r.get("is_disconnected") or r.get("is_sdown"):
                    found.append(f"sentinel {s.port} sees replica {n.port} down: {r.get('flags')}")
        if len(masters) != 1:
            return [*found, f"sentinels name masters {sorted(masters)}"]
        return found + self._replica_problems(self.node(masters.pop()))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait, bounded, until :meth:`problems` finds none."""
        wait_until(self.problems, timeout_s, "the sentinels and their master to be ready")

    def failover(self, timeout_s: float = 30.0) -> FailoverTiming:
        """SENTINEL FAILOVER bus on one sentinel; wait until every sentinel names the other node,
        it says it is master and the old master (when alive) replicates it, in sync."""
        old, new = self.primary(), self.replica()
        asked = next(s for s in self.sentinel_servers if s.alive)
        started = time.monotonic()
        with asked.admin() as c:
            c.execute_command("SENTINEL", "FAILOVER", self.master_name)

        def promoted() -> list[str]:
            found = [] if new.role == "master" else [f"{new} is {new.role}"]
            for s in self.sentinel_servers:
                if s.alive:
                    try:
                        ports = self._named_master(s)
                    except (*CHECK_ERRORS, TypeError, ValueError) as e:
                        found.append(f"sentinel {s.port}: {e!r}")
                        continue
                    if ports != (new.port, new.port):
                        found.append(f"sentinel {s.port} names {ports}")
            return found

        wait_until(promoted, timeout_s, f"the sentinels to name {new}")
        promoted_s = time.monotonic() - started

        def converged() -> list[str]:
            found = self.problems()
            if not found and old.alive and self.primary() is not new:
                found.append(f"the master is {self.primary()}, not {new}")
            return found

        wait_until(converged, timeout_s, f"{old} to replicate {new}")
        return FailoverTiming(promoted_s, time.monotonic() - started)


@dataclass
class Timer:
    """Seconds since creation, for printing what a step took."""

    started: float = field(default_factory=time.monotonic)

    def __call__(self) -> float:
        return time.monotonic() - self.started
