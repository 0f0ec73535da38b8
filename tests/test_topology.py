"""The Redis Cluster and Sentinel set-ups of :mod:`loadtest.harness.cluster` and
:mod:`loadtest.harness.sentinel`: each starts whole, redis-py's cluster and sentinel clients write
and read through it, a failover (coordinated, and after a kill -9) leaves the client working
after a bounded retry, and a killed, paused or restarted node rejoins. Each ``[topology]`` line
prints what a step took."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.sentinel import Sentinel

from loadtest.harness.cluster import ClusterServer, RedisCluster
from loadtest.harness.ports import HOST
from loadtest.harness.sentinel import RedisSentinel
from loadtest.harness.waits import Timer, wait_no_problems

pytestmark = pytest.mark.slow

T = TypeVar("T")
RETRY_BOUND_S = 15.0


def need_binaries() -> None:
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} missing on CI: the bootstrap must install them")
        pytest.skip(f"{missing} not installed (run `make test`, which installs them); not on CI")


def eventually(action: Callable[[], T], timeout_s: float = RETRY_BOUND_S) -> tuple[T, float]:
    """Run ``action`` until it stops raising redis errors; its result and the seconds it took."""
    timer = Timer()
    while True:
        try:
            return action(), timer()
        except (redis.RedisError, OSError) as e:
            if timer() > timeout_s:
                raise AssertionError(f"still failing after {timeout_s}s: {e!r}") from e
            time.sleep(0.05)


def say(line: str) -> None:
    print(f"\n[topology] {line}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    need_binaries()
    topo = RedisCluster(tmp_path / "cluster")
    try:
        timer = Timer()
        topo.start()
        say(f"cluster of {len(topo.nodes)} nodes ok in {timer():.2f}s")
        yield topo
    finally:
        topo.kill()


@pytest.fixture
def cluster_client(cluster: RedisCluster) -> Iterator[ClusterClient]:
    nodes = [ClusterNode(HOST, int(seed.rpartition(":")[2])) for seed in cluster.seeds]
    client = ClusterClient(startup_nodes=nodes, decode_responses=True, socket_timeout=2,
                           socket_connect_timeout=1)  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    need_binaries()
    topo = RedisSentinel(tmp_path / "sentinel")
    try:
        timer = Timer()
        topo.start()
        say(f"sentinel set-up (1 primary, 1 replica, 3 sentinels) ready in {timer():.2f}s")
        yield topo
    finally:
        topo.kill()


@pytest.fixture
def sentinel_client(sentinel: RedisSentinel) -> Sentinel:
    return Sentinel(sentinel.sentinels, socket_timeout=1, socket_connect_timeout=1)


def master_of(sentinel_client: Sentinel) -> redis.Redis:
    return sentinel_client.master_for("bus", decode_responses=True, socket_timeout=2,
                                      socket_connect_timeout=1)  # fmt: skip


def write_and_read(client: redis.Redis | ClusterClient, key: str, value: str) -> str | None:
    client.set(key, value)
    got = client.get(key)
    return None if got is None else str(got)


def readonly_get(node: ClusterServer, key: str) -> str | None:
    """GET on a replica (READONLY on the same connection)."""
    with node.client(decode_responses=True, single_connection_client=True) as c:
        c.execute_command("READONLY")
        got = c.get(key)
    return None if got is None else str(got)


# -- Redis Cluster ------------------------------------------------------------------------------


def test_cluster_is_whole_and_the_cluster_client_routes_keys(
    cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    primaries, replicas = cluster.primaries, cluster.replicas
    assert len(primaries) == 3 and len(replicas) == 3
    assert {cluster.master_of(r).port for r in replicas} == {p.port for p in primaries}
    assert sorted(cluster.seeds) == sorted(p.address for p in primaries)
    assert all(p.role == "master" for p in primaries) and all(r.role == "slave" for r in replicas)
    ports = [n.port for n in cluster.nodes] + [n.cluster_port for n in cluster.nodes]
    assert len(set(ports)) == 12
    assert all((n.workdir / "nodes.conf").exists() for n in cluster.nodes)
    assert len({n.workdir for n in cluster.nodes}) == 6

    values = {f"k{i}": f"v{i}" for i in range(300)}
    for key, value in values.items():
        cluster_client.set(key, value)
    assert cluster_client.mget_nonatomic(list(values)) == list(values.values())
    sizes = [p.admin().dbsize() for p in primaries]
    assert sum(sizes) == 300 and min(sizes) > 0, sizes  # every primary holds some

    for key in ("k0", "k1", "k2", "k3"):
        owner = cluster.primary_for_key(key)
        assert cluster.primary_for_slot(cluster.keyslot(key)) is owner
        assert owner.admin().get(key) == values[key]
        assert owner.admin().wait(1, 2000) == 1
        assert readonly_get(cluster.replica_of(owner), key) == values[key]


def test_cluster_failover_and_the_client_keeps_working(
    cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    key = "{bus}:failover"
    before = {f"{{bus}}:{i}": str(i) for i in range(50)}  # the slot of the failed-over primary
    for k, v in before.items():
        cluster_client.set(k, v)
    cluster_client.set(key, "before")
    owner = cluster.primary_for_key(key)
    assert cluster.primary_for_key("{bus}:0") is owner
    replica = cluster.replica_of(owner)

    timing = cluster.failover(replica)
    say(f"cluster CLUSTER FAILOVER {replica.address} (was {owner.address}): {timing}")

    assert cluster.primary_for_key(key) is replica
    assert replica.role == "master" and owner.role == "slave"
    assert cluster.master_of(owner) is replica
    assert replica.address in cluster.seeds and owner.address not in cluster.seeds
    got, took = eventually(lambda: write_and_read(cluster_client, key, "after"))
    say(f"cluster client wrote and read after the failover in {took:.3f}s")
    assert got == "after"
    assert cluster_client.mget_nonatomic(list(before)) == list(before.values())
    cluster.wait_ok()


def test_cluster_nodes_killed_paused_and_restarted_rejoin(
    cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    key = "bus:kill"
    cluster_client.set(key, "before")
    replica = cluster.replicas[0]
    replica.kill()
    cluster.wait_ok()  # a replica down: still ok
    replica.restart()
    cluster.wait_ok()
    assert replica.role == "slave"

    replica.pause()
    time.sleep(0.3)
    replica.resume()
    cluster.wait_ok()

    owner = cluster.primary_for_key(key)
    assert owner.admin().wait(1, 2000) == 1
    heir = cluster.replica_of(owner)
    node_id = owner.node_id
    timer = Timer()
    owner.kill()
    got, took = eventually(lambda: cluster_client.get(key))  # retried from the kill on
    wait_no_problems(lambda: [] if heir.role == "master" else [f"{heir} is {heir.role}"], 30,
                     "the replica to take over")  # fmt: skip
    promoted = timer()
    cluster.wait_ok()
    say(f"cluster failover after kill -9 of {owner.address}: cluster client read again "
        f"{took:.3f}s after the kill; {heir.address} master by {promoted:.3f}s, cluster ok in "
        f"{timer():.3f}s (node timeout 1 s)")  # fmt: skip
    assert got == "before"
    assert cluster.primary_for_key(key) is heir

    owner.restart()
    cluster.wait_ok()
    with owner.admin() as c:
        assert c.execute_command("CLUSTER", "MYID") == node_id  # same nodes.conf
    assert owner.role == "slave" and cluster.master_of(owner) is heir


# -- Sentinel -----------------------------------------------------------------------------------


def test_sentinel_is_ready_and_serves_master_and_replica(
    sentinel: RedisSentinel, sentinel_client: Sentinel
) -> None:
    primary, replica = sentinel.primary(), sentinel.replica()
    assert sentinel.master_name == "bus" and len(sentinel.sentinels) == 3
    assert primary is sentinel.data_nodes[0] and replica is sentinel.data_nodes[1]
    assert primary.role == "master" and replica.role == "slave"
    assert sentinel_client.discover_master("bus") == (HOST, primary.port)
    assert sentinel_client.discover_slaves("bus") == [(HOST, replica.port)]
    for s in sentinel.sentinel_servers:
        assert "sentinel myid" in s.conf.read_text()  # each rewrote its own file

    master = master_of(sentinel_client)
    for i in range(100):
        master.set(f"k{i}", i)
    assert master.wait(1, 2000) == 1
    slave = sentinel_client.slave_for("bus", decode_responses=True, socket_timeout=2)
    assert slave.mget([f"k{i}" for i in range(100)]) == [str(i) for i in range(100)]
    assert replica.admin().get("k99") == "99"


def test_sentinel_failover_and_the_client_keeps_working(
    sentinel: RedisSentinel, sentinel_client: Sentinel
) -> None:
    master = master_of(sentinel_client)
    master.set("bus:failover", "before")
    assert master.wait(1, 2000) == 1
    old, new = sentinel.primary(), sentinel.replica()

    timing = sentinel.failover()
    window = timing.total_s - timing.promoted_s
    say(f"sentinel SENTINEL FAILOVER bus ({old.address} -> {new.address}): {timing}; the old "
        f"master was a replica in sync {window:.3f}s after the switch")  # fmt: skip

    assert sentinel.primary() is new and sentinel.replica() is old
    assert new.role == "master" and old.role == "slave"
    assert sentinel_client.discover_master("bus") == (HOST, new.port)
    got, took = eventually(lambda: write_and_read(master, "bus:failover-after", "after"))
    say(f"sentinel client wrote and read after the failover in {took:.3f}s")
    assert got == "after"
    assert new.admin().get("bus:failover-after") == "after"
    assert master.get("bus:failover") == "before"


def test_sentinel_data_nodes_killed_paused_and_restarted_rejoin(
    sentinel: RedisSentinel, sentinel_client: Sentinel
) -> None:
    master = master_of(sentinel_client)
    master.set("bus:kill", "before")
    replica = sentinel.replica()
    replica.kill()
    replica.restart()
    sentinel.wait_ready()
    assert replica.role == "slave"

    replica.pause()
    time.sleep(0.3)
    replica.resume()
    sentinel.wait_ready()

    assert master.wait(1, 2000) == 1
    old = sentinel.primary()
    timer = Timer()
    old.kill()
    got, took = eventually(lambda: master.get("bus:kill"))  # retried from the kill on
    wait_no_problems(lambda: [] if sentinel.primary() is replica and replica.role == "master"
                     else ["not yet"], 30, "the sentinels to fail over")  # fmt: skip
    promoted = timer()
    sentinel.wait_ready()
    say(f"sentinel failover after kill -9 of {old.address}: sentinel client read again "
        f"{took:.3f}s after the kill; {replica.address} named master by {promoted:.3f}s, "
        f"ready in {timer():.3f}s (down-after 1 s)")  # fmt: skip
    assert got == "before"

    old.restart()  # comes back as a replica of the master the sentinels name
    sentinel.wait_ready()
    assert old.role == "slave" and sentinel.primary() is replica
    assert old.admin().get("bus:kill") == "before"
