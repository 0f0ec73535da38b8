"""The cluster client (producer/connection/cluster.py) against a real Redis Cluster.

Three primaries and three replicas (:mod:`loadtest.harness.cluster`, node timeout 1 s). The tests
that leave the topology as they found it share one cluster per module; those that fail over or
kill a primary start their own. Each test names its queues with its own prefix, so the keys
of one test never meet those of another on the shared cluster. What the client wrote is read
back on the node itself (``node.admin()``), not through the client under test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import AskError, ClusterCrossSlotError, ClusterDownError, ResponseError

from loadtest.harness.cluster import RedisCluster
from loadtest.harness.ports import free_port
from producer import keys
from producer.connection.client import node_client
from producer.connection.cluster import ClusterClient
from tests.clusterkit import (
    PUSH_LEN,
    asking,
    cluster_clients,
    keys_in_slot,
    port_of,
    queues_on_shards,
    slot_migrating,
    start_cluster,
    stored,
)

pytestmark = pytest.mark.slow

# A kill -9 of a primary -> its slots served again: its replica notices after the node timeout
# (1 s) and the others agree it failed, it waits 0.5-1 s before asking for votes, the other
# primaries vote; the client reads the slot map again at most every 0.1 s (REFRESH_MIN_S).
KILL_RECOVERY_BOUND_S = 10.0

CLIENT_NAME = "cluster-client-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One cluster for the tests that leave its topology as they found it."""
    yield from start_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of this test's own: it fails over or kills a node."""
    yield from start_cluster(tmp_path / "cluster")


@pytest.fixture
def connect() -> Iterator[Callable[..., ClusterClient]]:
    yield from cluster_clients(CLIENT_NAME)


# -- routing ------------------------------------------------------------------------------------


def test_keys_of_three_queues_are_written_on_three_different_primaries(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    queues = queues_on_shards(cluster, 3, prefix="route")
    homes = [cluster.primary_for_key(keys.pending(q)) for q in queues]
    assert len({n.port for n in homes}) == 3
    for q in queues:
        assert client.lpush(keys.pending(q), f"m-{q}") == 1
        assert client.zadd(keys.delayed(q), {f"later-{q}": 1000}) == 1
        assert client.hset(keys.record(q, "id1"), "state", "pending") == 1
        assert client.set(keys.owner(q, "w1"), "token") is True
    for q, home in zip(queues, homes, strict=True):
        with home.admin() as c:
            assert c.lrange(keys.pending(q), 0, -1) == [f"m-{q}"]
            assert c.zrange(keys.delayed(q), 0, -1, withscores=True) == [(f"later-{q}", 1000.0)]
            assert c.hgetall(keys.record(q, "id1")) == {"state": "pending"}
            assert c.get(keys.owner(q, "w1")) == "token"
        # The four keys share the queue's slot; only its primary holds any key of that slot.
        slot = cluster.keyslot(keys.pending(q))
        assert [keys_in_slot(n, slot) for n in homes] == [4 if n is home else 0 for n in homes]
        assert port_of(node_client(client, keys.pending(q))) == home.port
    assert [client.lrange(keys.pending(q), 0, -1) for q in queues] == [
        [f"m-{q}".encode()] for q in queues
    ]
    assert client.refreshes == 1  # the map was read once, before the first command


def test_a_command_on_a_migrating_slot_follows_ask_to_the_importing_node(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    """While a slot migrates, its source still serves the keys it has and answers ASK for the
    others: those go once to the target, after ASKING; the slot map is not read again."""
    client = connect(cluster)
    q, elsewhere = queues_on_shards(cluster, 2, prefix="ask")
    assert client.rpush(keys.pending(q), "old") == 1
    with slot_migrating(cluster, q, elsewhere) as (s, t):
        assert client.rpush(keys.pending(q), "old2") == 2  # on the source: runs there
        assert client.rpush(keys.dead(q), "new") == 1  # not on the source: ASK
        assert s.lrange(keys.pending(q), 0, -1) == ["old", "old2"]
        with pytest.raises(AskError):  # the source has no such key: it sends us on
            s.lrange(keys.dead(q), 0, -1)
        assert asking(t, "LRANGE", keys.dead(q), 0, -1) == ["new"]
        assert client.refreshes == 1


def test_scan_iter_with_a_queues_hash_tag_in_its_match_pattern_scans_that_queues_node(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    q, other = queues_on_shards(cluster, 2, prefix="scan")
    for consumer in ("a", "b", "c"):
        client.rpush(keys.processing(q, consumer), "m")
        client.rpush(keys.processing(other, consumer), "m")
    found = set(client.scan_iter(match=keys.processing_prefix(q) + "*", count=100))
    assert found == {keys.processing(q, c).encode() for c in ("a", "b", "c")}


def test_memory_usage_of_a_key_is_asked_of_its_node(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    (q,) = queues_on_shards(cluster, 1, prefix="memory")
    client.rpush(keys.pending(q), "m")
    with cluster.primary_for_key(keys.pending(q)).admin() as c:
        expected = c.memory_usage(keys.pending(q))
    assert isinstance(expected, int)
    assert client.memory_usage(keys.pending(q)) == expected


# -- pipelines and transactions -----------------------------------------------------------------


def test_a_pipeline_over_three_nodes_returns_its_replies_in_command_order(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    a, b, c = queues_on_shards(cluster, 3, prefix="pipe")
    pipe = client.pipeline(transaction=False)
    pipe.rpush(keys.pending(a), "a1")
    pipe.incr(keys.dead_dropped(b))
    pipe.rpush(keys.pending(c), "c1", "c2")
    pipe.rpush(keys.pending(a), "a2")
    pipe.incrby(keys.dead_dropped(b), 10)
    pipe.lrange(keys.pending(c), 0, -1)
    pipe.lrange(keys.pending(a), 0, -1)
    pipe.get(keys.dead_dropped(b))
    pipe.llen(keys.pending(c))
    assert pipe.execute() == [
        1, 1, 2, 2, 11, [b"c1", b"c2"], [b"a1", b"a2"], b"11", 2
    ]  # fmt: skip
    assert len(pipe) == 0  # the queued commands are gone once sent
    with cluster.primary_for_key(keys.pending(a)).admin() as node:
        assert node.lrange(keys.pending(a), 0, -1) == ["a1", "a2"]
    with cluster.primary_for_key(keys.dead_dropped(b)).admin() as node:
        assert node.get(keys.dead_dropped(b)) == "11"
    with cluster.primary_for_key(keys.pending(c)).admin() as node:
        assert node.lrange(keys.pending(c), 0, -1) == ["c1", "c2"]


def test_an_error_reply_in_a_pipeline_keeps_its_place_and_the_other_nodes_still_run(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    a, b = queues_on_shards(cluster, 2, prefix="pipeerr")
    client.rpush(keys.pending(a), "m")
    pipe = client.pipeline(transaction=False)
    pipe.incr(keys.pending(a))  # WRONGTYPE: a list
    pipe.set(keys.owner(b, "w"), "t")
    pipe.llen(keys.pending(a))
    replies = pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], ResponseError)
    assert str(replies[0]).startswith("WRONGTYPE")
    assert replies[1:] == [True, 1]
    pipe.incr(keys.pending(a))
    pipe.set(keys.owner(b, "w"), "t2")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        pipe.execute()
    with cluster.primary_for_key(keys.owner(b, "w")).admin() as node:
        assert node.get(keys.owner(b, "w")) == "t2"


def test_a_transaction_spanning_two_nodes_raises_crossslot_and_writes_nothing(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    a, b = queues_on_shards(cluster, 2, prefix="xslot")
    pipe = client.pipeline(transaction=True)
    pipe.rpush(keys.pending(a), "m")
    pipe.rpush(keys.pending(b), "m")
    with pytest.raises(ClusterCrossSlotError, match="one node"):
        pipe.execute()
    assert len(pipe) == 0
    for q in (a, b):
        slot = cluster.keyslot(keys.pending(q))
        assert keys_in_slot(cluster.primary_for_key(keys.pending(q)), slot) == 0


def test_a_transaction_on_one_queues_keys_runs_as_multi_exec_on_its_node(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    (q,) = queues_on_shards(cluster, 1, prefix="multi")
    home = cluster.primary_for_key(keys.pending(q))

    def execs() -> int:
        with home.admin() as c:
            return int(c.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))

    before = execs()
    pipe = client.pipeline(transaction=True)
    pipe.rpush(keys.pending(q), "m1", "m2")
    pipe.lmove(keys.pending(q), keys.processing(q, "w1"), "LEFT", "LEFT")
    pipe.llen(keys.pending(q))
    pipe.incr(keys.dead_dropped(q))
    assert pipe.execute() == [2, b"m1", 1, 1]
    assert execs() == before + 1
    with home.admin() as c:
        assert c.lrange(keys.pending(q), 0, -1) == ["m2"]
        assert c.lrange(keys.processing(q, "w1"), 0, -1) == ["m1"]
        assert c.get(keys.dead_dropped(q)) == "1"


def test_a_pipeline_command_on_a_migrating_slot_follows_ask_to_the_importing_node(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    q, elsewhere = queues_on_shards(cluster, 2, prefix="askpipe")
    assert client.rpush(keys.pending(q), "old") == 1
    with slot_migrating(cluster, q, elsewhere) as (_, t):
        pipe = client.pipeline(transaction=False)
        pipe.rpush(keys.pending(q), "old2")  # on the source: runs there
        pipe.rpush(keys.dead(q), "new")  # not on the source: ASK
        pipe.rpush(keys.pending(elsewhere), "m")
        assert pipe.execute() == [2, 1, 1]
        assert asking(t, "LRANGE", keys.dead(q), 0, -1) == ["new"]


# -- scripts ------------------------------------------------------------------------------------


def test_a_registered_script_runs_on_every_shard_and_after_a_script_flush(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    queues = queues_on_shards(cluster, 3, prefix="script")
    script = client.register_script(PUSH_LEN)
    assert [script(keys=[keys.pending(q)], args=["one"]) for q in queues] == [1, 1, 1]
    for node in cluster.primaries:  # NOSCRIPT on the first run: loaded on every primary
        with node.admin() as c:
            assert c.script_exists(script.sha) == [True]
    flushed = cluster.primary_for_key(keys.pending(queues[1]))
    with flushed.admin() as c:
        c.script_flush()
        assert c.script_exists(script.sha) == [False]
    assert client.script_exists(script.sha) == [False]  # missing on one primary: missing
    assert [script(keys=[keys.pending(q)], args=["two"]) for q in queues] == [2, 2, 2]
    with flushed.admin() as c:
        assert c.script_exists(script.sha) == [True]
        assert c.lrange(keys.pending(queues[1]), 0, -1) == ["one", "two"]
    assert client.script_exists(script.sha) == [True]


def test_a_script_in_a_routed_pipeline_runs_after_a_script_flush(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    queues = queues_on_shards(cluster, 3, prefix="pipescript")
    script = client.register_script(PUSH_LEN)
    assert client.script_load(PUSH_LEN) == script.sha
    for q in queues[:2]:
        with cluster.primary_for_key(keys.pending(q)).admin() as c:
            c.script_flush()
    pipe = client.pipeline(transaction=False)
    for q in queues:
        script(keys=[keys.pending(q)], args=["x"], client=pipe)
        pipe.llen(keys.pending(q))
        script(keys=[keys.pending(q)], args=["y"], client=pipe)
    assert pipe.execute() == [1, 1, 2] * 3
    for q in queues:
        with cluster.primary_for_key(keys.pending(q)).admin() as c:
            assert c.lrange(keys.pending(q), 0, -1) == ["x", "y"]
            assert c.script_exists(script.sha) == [True]


# -- commands without a key ---------------------------------------------------------------------


def test_ping_and_time_go_to_the_node_of_the_stats(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    assert client.ping() is True
    seconds, micros = client.time()
    assert abs(seconds + micros / 1e6 - time.time()) < 5.0
    assert port_of(client.node_for("{stats}")) == cluster.primary_for_key("{stats}").port


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.client_list(), id="CLIENT LIST"),
        pytest.param(lambda c: c.info(), id="INFO"),
        pytest.param(lambda c: c.wait(1, 100), id="WAIT"),
        pytest.param(lambda c: c.dbsize(), id="DBSIZE"),
        pytest.param(lambda c: c.config_get("maxmemory"), id="CONFIG GET"),
        pytest.param(lambda c: c.scan(0, match="bus:*"), id="SCAN without a hash tag"),
    ],
)
def test_a_keyless_command_about_one_node_raises_type_error_naming_node_for(
    cluster: RedisCluster,
    connect: Callable[..., ClusterClient],
    call: Callable[[redis.Redis], Any],
) -> None:
    client = connect(cluster)
    with pytest.raises(TypeError, match=r"through node_for\(key\)"):
        call(client)


def test_client_list_through_node_client_lists_that_nodes_connections(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    (q,) = queues_on_shards(cluster, 1, prefix="clist")
    home = cluster.primary_for_key(keys.pending(q))
    listed = node_client(client, keys.pending(q)).client_list()
    mine = [c for c in listed if c["name"] == f"bus:admin:{CLIENT_NAME}"]
    assert len(mine) == 1  # the connection that asked
    assert mine[0]["laddr"] == home.address


def test_pubsub_numsub_sums_the_subscribers_of_every_primary(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    client = connect(cluster)
    channel, quiet = keys.channel("numsub"), keys.channel("numsub-nobody")
    first, second = cluster.primaries[:2]
    with first.admin() as c1, second.admin() as c2:
        subs = [c1.pubsub(), c2.pubsub()]
        try:
            for sub in subs:
                sub.subscribe(channel)
                assert sub.get_message(timeout=2)["type"] == "subscribe"
            assert c1.pubsub_numsub(channel) == [(channel, 1)]  # each node counts its own
            assert c2.pubsub_numsub(channel) == [(channel, 1)]
            assert client.pubsub_numsub(channel, quiet) == [
                (channel.encode(), 2), (quiet.encode(), 0)
            ]  # fmt: skip
        finally:
            for sub in subs:
                sub.close()


# -- failover and kill -9 -----------------------------------------------------------------------


def test_after_a_cluster_failover_the_same_client_follows_moved_to_the_new_primary(
    own_cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    """Three clients read the slot map before CLUSTER FAILOVER of one shard; each then sends
    one kind of work to that shard with its map out of date: the old primary (a replica now)
    answers MOVED, the map is read again, the work runs on the new primary."""
    topo = own_cluster
    queues = queues_on_shards(topo, 3, prefix="moved")
    q = queues[0]
    commands, pipelined, scripted = connect(topo), connect(topo), connect(topo)
    script = scripted.register_script(PUSH_LEN)
    for client in (commands, pipelined, scripted):
        assert client.llen(keys.pending(q)) == 0
        assert client.refreshes == 1
    assert script(keys=[keys.pending(q)], args=["before"]) == 1
    old = topo.primary_for_key(keys.pending(q))
    new = topo.replica_of(old)
    timing = topo.failover(new)
    assert topo.primary_for_key(keys.pending(q)) is new
    assert old.role == "slave"

    # One command at a time.
    assert commands.rpush(keys.pending(q), "after") == 2
    assert commands.lrange(keys.pending(q), 0, -1) == [b"before", b"after"]
    assert commands.refreshes == 2
    assert port_of(node_client(commands, keys.pending(q))) == new.port

    # A pipeline over the three shards: the moved command is sent again, to its new node.
    pipe = pipelined.pipeline(transaction=False)
    for queue in queues:
        pipe.rpush(keys.pending(queue), "piped")
    assert pipe.execute() == [3, 1, 1]
    assert pipelined.refreshes == 2

    # A script: MOVED, then NOSCRIPT on the new primary (scripts are not replicated), loaded.
    assert script(keys=[keys.pending(q)], args=["scripted"]) == 4
    assert scripted.refreshes == 2

    assert stored(new, q) == ["before", "after", "piped", "scripted"]
    print(f"\n[cluster-client] CLUSTER FAILOVER {old.port} -> {new.port}: {timing}")


def test_a_transaction_after_a_cluster_failover_runs_on_the_new_primary(
    own_cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    """Queued on the old primary, a transaction is answered MOVED and EXECABORT: nothing ran.
    The map is then out of date: at the latest the next transaction goes to the new primary."""
    topo = own_cluster
    (q,) = queues_on_shards(topo, 1, prefix="movedmulti")
    client = connect(topo)
    assert client.rpush(keys.pending(q), "before") == 1
    old = topo.primary_for_key(keys.pending(q))
    new = topo.replica_of(old)
    topo.failover(new)

    outcomes: list[str] = []
    for _ in range(2):
        pipe = client.pipeline(transaction=True)
        pipe.rpush(keys.pending(q), "in-multi")
        pipe.llen(keys.pending(q))
        try:
            outcomes.append(repr(pipe.execute()))
            break
        except redis.RedisError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    assert outcomes[-1] == "[2, 2]", outcomes
    assert client.refreshes == 2
    assert stored(new, q) == ["before", "in-multi"]


def test_after_a_kill_9_of_a_primary_its_slots_work_again_once_the_replica_takes_over(
    own_cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    """Until the replica is promoted the slot map names the dead node: commands to its slots
    raise ConnectionError (or CLUSTERDOWN); then the same client reads the new map and they
    run, within KILL_RECOVERY_BOUND_S of the kill."""
    topo = own_cluster
    (q,) = queues_on_shards(topo, 1, prefix="kill")
    client = connect(topo)
    assert client.rpush(keys.pending(q), "before") == 1
    assert node_client(client, keys.pending(q)).wait(1, 2000) == 1  # the replica has it
    victim = topo.primary_for_key(keys.pending(q))
    heir = topo.replica_of(victim)
    refreshes = client.refreshes

    victim.kill()
    killed_at = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.rpush(keys.pending(q), "during")
    errors: dict[str, int] = {}
    while True:
        try:
            assert client.rpush(keys.pending(q), "after") == 2
            break
        except (redis.ConnectionError, ClusterDownError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        assert time.monotonic() - killed_at < KILL_RECOVERY_BOUND_S, errors
        time.sleep(0.05)
    recovered_s = time.monotonic() - killed_at

    assert heir.role == "master"
    assert port_of(node_client(client, keys.pending(q))) == heir.port
    assert client.refreshes == refreshes + 1  # the map changed once: to the promoted replica
    assert client.lrange(keys.pending(q), 0, -1) == [b"before", b"after"]
    assert stored(heir, q) == ["before", "after"]
    print(f"\n[cluster-client] kill -9 of primary {victim.port}: its slots served again "
          f"through the same client {recovered_s:.2f} s after the kill (bound "
          f"{KILL_RECOVERY_BOUND_S:.0f} s); errors meanwhile {errors}")  # fmt: skip


# -- settings -----------------------------------------------------------------------------------


def test_a_dead_seed_is_skipped_for_the_next_one(
    cluster: RedisCluster, connect: Callable[..., ClusterClient]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    client = connect(seeds=(dead, cluster.seeds[0]))
    (q,) = queues_on_shards(cluster, 1, prefix="seed")
    assert client.rpush(keys.pending(q), "m") == 1
    assert client.lrange(keys.pending(q), 0, -1) == [b"m"]
    assert client.refreshes == 1
    assert stored(cluster.primary_for_key(keys.pending(q)), q) == ["m"]


def test_with_only_dead_seeds_the_first_command_names_the_addresses_tried(
    connect: Callable[..., ClusterClient],
) -> None:
    dead = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    client = connect(seeds=dead)
    for _ in range(2):  # each command tries them again
        with pytest.raises(redis.ConnectionError) as raised:
            client.rpush(keys.pending("seeds"), "m")
        message = str(raised.value)
        assert message.startswith("no cluster node answered CLUSTER SLOTS (")
        assert all(f"{address}: " in message for address in dead), message
    assert client.refreshes == 0
