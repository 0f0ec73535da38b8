"""Redis Cluster helpers of the load test and the bench: create a cluster from started nodes,
tell when its nodes agree, and fail one shard over to its replica (``CLUSTER FAILOVER``).

Everything talks to each node on its own plain connection, so what a node says is its own view.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import redis

from producer.connection.cluster import slot_of

SLOTS = 16384
FAILOVER_WAIT_S = 15.0  # bound on a coordinated failover: promoted, and every node agrees


class ClusterError(RuntimeError):
    """The cluster could not be created, did not agree in time, or did not fail over."""


@contextlib.contextmanager
def node(port: int) -> Iterator[redis.Redis]:
    """A plain client of one node on loopback, short deadlines, closed on leaving."""
    client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2, protocol=2)
    try:
        yield client
    finally:
        client.close()


def info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict."""
    text = client.execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def slot_map(client: redis.Redis) -> list[tuple[int, int, int]]:
    """``CLUSTER SLOTS`` as sorted (first slot, last slot, port of the primary)."""
    return sorted((int(e[0]), int(e[1]), int(e[2][1]))
                  for e in client.execute_command("CLUSTER", "SLOTS"))  # fmt: skip


def create(addresses: list[str], replicas: int) -> None:
    """``redis-cli --cluster create`` over ``addresses`` (``host:port``), ``replicas`` a shard."""
    cli = shutil.which("redis-cli")
    if not cli:
        raise ClusterError("redis-cli is not installed (it comes with redis-server)")
    done = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas",
                           str(replicas), "--cluster-yes"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    if done.returncode != 0:
        raise ClusterError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")


def agreed(ports: list[int]) -> list[tuple[int, int, int]] | None:
    """The slot map once every node says ``cluster_state:ok``, knows every other, sees every
    slot served and the same map, and every replica's link to its primary is up; else None."""
    maps = []
    for port in ports:
        try:
            with node(port) as client:
                state = info(client)
                if (state.get("cluster_state") != "ok"
                        or int(state.get("cluster_slots_ok", 0)) != SLOTS
                        or int(state.get("cluster_known_nodes", 0)) != len(ports)):  # fmt: skip
                    return None
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return None
                maps.append(slot_map(client))
        except (redis.RedisError, OSError):
            return None
    return maps[0] if maps and all(m == maps[0] for m in maps) else None


def wait_agreed(ports: list[int], timeout_s: float) -> list[tuple[int, int, int]]:
    """:func:`agreed`'s map, waited on (bounded)."""
    deadline = time.monotonic() + timeout_s
    while (found := agreed(ports)) is None:
        if time.monotonic() > deadline:
            raise ClusterError(f"the cluster's {len(ports)} nodes did not agree in {timeout_s:g}s")
        time.sleep(0.05)
    return found


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


def failover(ports: list[int], key: str) -> dict[str, Any]:
    """``CLUSTER FAILOVER`` on the replica of ``key``'s primary; returns once every node's map
    names the replica (bounded), with the ports and how long each step took."""
    old = owner_port(ports, key)
    new = replica_of(ports, old)
    slot = slot_of(key)
    t0 = time.monotonic()
    with node(new) as client:
        client.execute_command("CLUSTER", "FAILOVER")
    promoted_s: float | None = None
    deadline = t0 + FAILOVER_WAIT_S
    while time.monotonic() < deadline:
        if promoted_s is None and _role(new) == "master":
            promoted_s = time.monotonic() - t0
        if promoted_s is not None and all(_serves(port, slot, new) for port in ports):
            return {
                "old_primary": old,
                "new_primary": new,
                "promoted_s": round(promoted_s, 3),
                "agreed_s": round(time.monotonic() - t0, 3),
            }
        time.sleep(0.02)
    raise ClusterError(f"the replica on port {new} did not take over in {FAILOVER_WAIT_S:g}s")


def _role(port: int) -> str:
    try:
        with node(port) as client:
            return str(client.info("replication")["role"])
    except (redis.RedisError, OSError):
        return "unknown"


def _serves(port: int, slot: int, primary: int) -> bool:
    """Whether the node on ``port`` sees ``primary`` serving ``slot``."""
    try:
        with node(port) as client:
            served = slot_map(client)
    except (redis.RedisError, OSError):
        return False
    return any(first <= slot <= last and owner == primary for first, last, owner in served)
