"""A Sentinel set-up of redis-server processes of its own on 127.0.0.1.

:class:`RedisSentinel`: a primary, its replica and three sentinels monitoring them as ``bus``;
``start()`` waits, bounded, until the sentinels agree on the primary, and ``kill()`` ends every
process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from loadtest.harness.ports import HOST, PortPicker
from loadtest.harness.server import (
    CHECK_ERRORS,
    NO_SYNC_DELAY,
    RedisServer,
    Topology,
    redis_binary,
)
from loadtest.harness.waits import FailoverTiming, wait_no_problems


class DataServer(RedisServer):
    """A primary or replica under Sentinel. On (re)start it replicates whatever the sentinels
    name as master, unless that is itself or no sentinel answers (``master_port`` asks them)."""

    def __init__(self, workdir: Path, port: int, master_port: Callable[[], int | None]) -> None:
        super().__init__(workdir, *NO_SYNC_DELAY, appendonly=True, port=port)
        self.master_port = master_port
        self.base_args = list(self.args)

    def start(self) -> Self:
        master = self.master_port()
        follow = [] if master in (None, self.port) else ["--replicaof", HOST, str(master)]
        self.args = [*self.base_args, *follow]
        super().start()
        return self

    def __repr__(self) -> str:
        return f"<DataServer {self.address} {'up' if self.alive else 'down'}>"


class SentinelServer(RedisServer):
    """``redis-server sentinel.conf --sentinel``; the conf is its own (sentinels rewrite it) and
    is written once, so a restart keeps what the sentinel learned."""

    def __init__(self, workdir: Path, port: int, conf_lines: list[str]) -> None:
        super().__init__(workdir, port=port)
        self.conf = self.workdir / "sentinel.conf"
        self.conf_lines = conf_lines

    def command(self) -> list[str]:
        binary = redis_binary()
        assert binary, "redis-server is not installed"
        if not self.conf.exists():
            head = [f"port {self.port}", f"bind {HOST}", f"dir {self.workdir}",
                    f"logfile {self.workdir / 'sentinel.log'}"]  # fmt: skip
            self.conf.write_text("\n".join(head + self.conf_lines) + "\n")
        return [binary, str(self.conf), "--sentinel"]

    def __repr__(self) -> str:
        return f"<SentinelServer {self.address} {'up' if self.alive else 'down'}>"


class RedisSentinel(Topology):
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

    def bring_up(self, timeout_s: float) -> None:
        """Start the primary, the replica (wait until in sync), the sentinels; wait until ready."""
        for node in self.data_nodes:
            node.start()
        self._started = True
        first = self.data_nodes[0]
        wait_no_problems(lambda: self._replica_problems(first), timeout_s, "the replica to sync")
        for s in self.sentinel_servers:
            s.start()
        self.wait_ready(timeout_s)

    def servers(self) -> list[RedisServer]:
        """The sentinels first, then the data nodes."""
        return [*self.sentinel_servers, *self.data_nodes]

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
        wait_no_problems(self.problems, timeout_s, "the sentinels and their master to be ready")

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

        wait_no_problems(promoted, timeout_s, f"the sentinels to name {new}")
        promoted_s = time.monotonic() - started

        def converged() -> list[str]:
            found = self.problems()
            if not found and old.alive and self.primary() is not new:
                found.append(f"the master is {self.primary()}, not {new}")
            return found

        wait_no_problems(converged, timeout_s, f"{old} to replicate {new}")
        return FailoverTiming(promoted_s, time.monotonic() - started)
