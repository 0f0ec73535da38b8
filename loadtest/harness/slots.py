"""A Redis Cluster seen through its nodes' ports: create one from started nodes, tell when its
nodes agree, and fail a shard over to its replica (``CLUSTER FAILOVER``). For clusters whose
processes someone else runs (the load-test runner's); :mod:`loadtest.harness.cluster` builds on
it for clusters of its own.

Everything talks to each node on its own plain connection, so what a node says is its own view.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from loadtest.harness.ports import HOST
from loadtest.harness.server import CHECK_ERRORS, redis_cli_binary
from loadtest.harness.waits import FailoverTiming, WaitTimeout, wait_for, wait_no_problems
from producer.connection.cluster import slot_of
from producer.errors import BusError

SLOTS = 16384
FAILOVER_WAIT_S = 15.0  # bound on a coordinated failover: promoted, and every node agrees


class ClusterError(BusError, RuntimeError):
    """The cluster could not be created, did not agree in time, or did not fail over."""


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


@contextlib.contextmanager
def node(port: int) -> Iterator[redis.Redis]:
    """A plain client of one node on loopback that decodes replies, short deadlines, closed on
    leaving."""
    client = redis.Redis(host=HOST, port=port, socket_timeout=5, socket_connect_timeout=2,
                         protocol=2, decode_responses=True)  # fmt: skip
    try:
        yield client
    finally:
        client.close()


def info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict."""
    text = str(client.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def nodes_view(client: redis.Redis) -> list[NodeLine]:
    """``CLUSTER NODES``, a line a node."""
    text = str(client.execute_command("CLUSTER", "NODES"))
    return [NodeLine.parse(line) for line in text.splitlines() if line.strip()]


def slot_map(client: redis.Redis) -> list[tuple[int, int, int]]:
    """``CLUSTER SLOTS`` as sorted (first slot, last slot, port of the primary)."""
    return sorted((int(e[0]), int(e[1]), int(e[2][1]))
                  for e in client.execute_command("CLUSTER", "SLOTS"))  # fmt: skip


def create(addresses: list[str], replicas: int, timeout_s: float = 60.0) -> None:
    """``redis-cli --cluster create`` over ``addresses`` (``host:port``), ``replicas`` a shard;
    a single node takes every slot itself (redis-cli wants three primaries at least)."""
    if len(addresses) == 1 and replicas == 0:
        with node(int(addresses[0].rpartition(":")[2])) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS - 1)
        return
    cli = redis_cli_binary()
    if not cli:
        raise ClusterError("redis-cli is not installed (it comes with redis-server)")
    done = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas",
                           str(replicas), "--cluster-yes"],
                          capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
    if done.returncode != 0:
        raise ClusterError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")


def problems(ports: list[int], known: int) -> list[str]:
    """What keeps the cluster of the nodes on ``ports`` (of ``known`` nodes in all) from being
    whole: every one ``cluster_state:ok``, knowing every node, all slots covered; every one's
    CLUSTER NODES agreeing on who is master of which slots and who replicates whom, none of the
    nodes on ``ports`` failing; replicas in sync."""
    found: list[str] = []
    shapes: dict[int, frozenset[tuple[int, str, tuple[tuple[int, int], ...]]]] = {}
    for port in ports:
        try:
            with node(port) as c:
                state, lines = info(c), nodes_view(c)
        except CHECK_ERRORS as e:
            found.append(f"{port}: {e!r}")
            continue
        if state.get("cluster_state") != "ok":
            found.append(f"{port}: cluster_state {state.get('cluster_state')}")
        if int(state.get("cluster_known_nodes", 0)) != known:
            found.append(f"{port}: knows {state.get('cluster_known_nodes')} nodes")
        for key in ("cluster_slots_assigned", "cluster_slots_ok"):
            if int(state.get(key, 0)) != SLOTS:
                found.append(f"{port}: {key} {state.get(key)}")
        ids = {line.node_id: line.port for line in lines}
        shapes[port] = frozenset(
            (line.port, "master" if line.is_master else f"of {ids.get(line.master_id or '')}",
             line.slots)
            for line in lines
        )  # fmt: skip
        failing = [line.port for line in lines if line.failing and line.port in ports]
        if failing:
            found.append(f"{port} sees live nodes {failing} failing")
    if len(set(shapes.values())) > 1:
        found.append(f"views differ: {shapes}")
    return found or _replica_problems(ports)


def _replica_problems(ports: list[int]) -> list[str]:
    found: list[str] = []
    for port in ports:
        try:
            with node(port) as c:
                repl = c.info("replication")
        except CHECK_ERRORS as e:
            found.append(f"{port}: {e!r}")
            continue
        if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
            found.append(f"{port}: link to its master {repl.get('master_link_status')}")
    return found


def wait_agreed(ports: list[int], timeout_s: float) -> list[tuple[int, int, int]]:
    """Wait, bounded, until :func:`problems` finds none; the slot map they agree on."""
    wait_no_problems(lambda: problems(ports, len(ports)), timeout_s,
                     f"the cluster's {len(ports)} nodes to agree", error=ClusterError)  # fmt: skip
    with node(ports[0]) as client:
        return slot_map(client)


def owner_port(ports: list[int], key: str) -> int:
    """The port of the primary of ``key``'s slot, as the first node that answers sees it."""
    slot = slot_of(key)
    with node(ports[0]) as client:
        served = slot_map(client)
    for first, last, port in served:
        if first <= slot <= last:
            return port
    raise ClusterError(f"slot {slot} is not served")


def replica_of(ports: list[int], primary: int) -> int:
    """The port of a replica of the primary on ``primary``."""
    for port in ports:
        with node(port) as client:
            replication = client.info("replication")
        if replication.get("role") == "slave" and int(replication["master_port"]) == primary:
            return port
    raise ClusterError(f"the primary on port {primary} has no replica")


def role(port: int) -> str:
    """The node's role by its own INFO (``master``, ``slave``), ``unknown`` when it is down."""
    try:
        with node(port) as client:
            return str(client.info("replication")["role"])
    except CHECK_ERRORS:
        return "unknown"


def promote(replica: int, agreed: Callable[[], list[str]], timeout_s: float,
            option: str | None = None, every_s: float = 0.05,
            error: Callable[[str], BaseException] = WaitTimeout) -> FailoverTiming:  # fmt: skip
    """``CLUSTER FAILOVER [FORCE|TAKEOVER]`` on the replica on port ``replica``; wait, within
    ``timeout_s`` in all, until it says it is master and then until ``agreed`` (the problems
    still in the way) finds none."""
    started = time.monotonic()
    with node(replica) as client:
        client.execute_command("CLUSTER", "FAILOVER", *([option] if option else []))
    wait_for(lambda: role(replica) == "master", timeout_s,
             f"the replica on port {replica} to become master", every_s, error=error)  # fmt: skip
    promoted_s = time.monotonic() - started
    wait_no_problems(agreed, max(0.0, timeout_s - promoted_s), "the cluster to agree on the "
                     f"failover to port {replica}", every_s, error=error)  # fmt: skip
    return FailoverTiming(promoted_s, time.monotonic() - started)


def failover(ports: list[int], key: str) -> dict[str, Any]:
    """``CLUSTER FAILOVER`` on the replica of ``key``'s primary; returns once every node's map
    names the replica (bounded), with the ports and how long each step took."""
    old = owner_port(ports, key)
    new = replica_of(ports, old)
    slot = slot_of(key)

    def not_serving() -> list[str]:
        return [f"{port} does not see {new} serve slot {slot}" for port in ports
                if not _serves(port, slot, new)]  # fmt: skip

    took = promote(new, not_serving, FAILOVER_WAIT_S, every_s=0.02, error=ClusterError)
    return {
        "old_primary": old,
        "new_primary": new,
        "promoted_s": round(took.promoted_s, 3),
        "agreed_s": round(took.total_s, 3),
    }


def _serves(port: int, slot: int, primary: int) -> bool:
    """Whether the node on ``port`` sees ``primary`` serving ``slot``."""
    try:
        with node(port) as client:
            served = slot_map(client)
    except CHECK_ERRORS:
        return False
    return any(first <= slot <= last and owner == primary for first, last, owner in served)
