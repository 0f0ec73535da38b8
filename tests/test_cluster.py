"""On a Redis Cluster: every role, queues on three shards, and failovers counted exactly.

Three primaries and three replicas (:mod:`loadtest.harness.cluster`); the daemons and gunicorn run
as processes with ``BUS_CLUSTER_NODES`` naming two of the nodes (the others are found from them).
Each queue's keys share the hash tag ``{q}``, so each queue lives on one shard; the queues of
these tests are picked to live on three different shards.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from loadtest.harness.cluster import RedisCluster
from loadtest.harness.waits import wait_for
from producer import Producer, keys, make_client
from tests.clusterkit import (
    URL,
    Stream,
    bus_env,
    bus_settings,
    channels_on_shards,
    depth,
    queues_on_shards,
    shard_subscribers,
    start_cluster,
)
from tests.procs import Proc, get_json, read_records
from tests.webapp import start_gunicorn

pytestmark = pytest.mark.slow
RECORD = "tests.handlers_for_tests:record"
# A primary's departure -> its queue handled again: a worker's blocked pop is answered
# -UNBLOCKED or its link breaks, it backs off (at most BUS_BACKOFF_CAP_S) and reads the slot map
# again. For a kill -9 the replicas first wait out the node timeout (1 s here) and the election.
RESUME_BOUND_S = 10.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    yield from start_cluster(tmp_path / "cluster")


def test_every_role_on_three_shards(
    cluster: RedisCluster, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Through gunicorn: pushes to queues on three shards, handled by at-least-once and
    at-most-once workers, each exactly once; messages published on channels of three shards
    (sharded pub/sub) received by one subscriber; a tracked message reads handled; the stats
    see every queue and channel."""
    queues = queues_on_shards(cluster, 3)
    channels = channels_on_shards(cluster, 3)
    assert len({cluster.primary_for_key(keys.pending(q)).port for q in queues}) == 3
    env = bus_env(cluster, queues, channels)
    for q, delivery in zip(queues, ("at-least-once", "at-least-once", "at-most-once"),
                           strict=True):  # fmt: skip
        spawn("worker", URL, "--queue", q, "--name", f"w-{q}", "--delivery", delivery,
              "--handler", RECORD, **env)  # fmt: skip
    subscribed = [a for c in channels for a in ("--channel", c)]
    spawn("subscriber", URL, "--name", "s1", *subscribed, "--handler", RECORD, **env)
    web, base = start_gunicorn(URL, tmp_path / "gunicorn.log", **env)
    try:
        wait_for(lambda: [shard_subscribers(cluster, c) for c in channels] == [1, 1, 1], 15,
                 "s1 subscribed on each channel's shard")  # fmt: skip
        pushed: dict[str, str] = {}
        for i in range(60):
            q = queues[i % 3]
            resp = requests.post(base + "/prodcons", json={"queue": q, "payload": {"n": i}},
                                 timeout=5)  # fmt: skip
            assert resp.status_code == 202, resp.text
            pushed[resp.json()["id"]] = q
        published = set()
        for i in range(20):
            body = {"channel": channels[i % 3], "payload": i}
            resp = requests.post(base + "/pubsub", json=body, timeout=5)
            assert resp.status_code == 202, resp.text
            published.add(resp.json()["id"])
        resp = requests.post(base + "/prodcons", timeout=5,
                             json={"queue": queues[0], "payload": "t", "track": True})  # fmt: skip
        tracked = resp.json()["id"]
        records = tmp_path / "records.jsonl"
        everything = set(pushed) | published | {tracked}
        wait_for(lambda: {x["id"] for x in read_records(records)} >= everything, 20,
                 "every message handled or received")  # fmt: skip
        wait_for(lambda: (get_json(f"{base}/api/messages/{tracked}") or {}).get("state")
                 == "handled", 10, "the tracked message's record to say handled")  # fmt: skip
        seen = Counter(x["id"] for x in read_records(records))
        assert all(seen[i] == 1 for i in everything), "a message was handled twice"
        assert [depth(cluster, q) for q in queues] == [0, 0, 0]

        def per_queue(field: str) -> list[int]:
            return [get_json(base + "/api/stats")["queues"][q][field] for q in queues]

        wait_for(lambda: per_queue("workers_alive") == [1, 1, 1], 10, "a worker on each queue")
        wait_for(lambda: per_queue("pushed_total") == [21, 20, 20], 10, "the pushes counted")
        stats = get_json(base + "/api/stats")["channels"]
        assert [stats[c]["subscribers"] for c in channels] == [1, 1, 1]
    finally:
        web.stop()


def test_cluster_failover_mid_stream_loses_nothing(
    cluster: RedisCluster, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLUSTER FAILOVER (coordinated: the replica has every write first) of the shard of one
    of three queues while a producer pushes to all three: every confirmed push is handled,
    nothing is lost, duplicates are counted, and the queue is handled again within
    RESUME_BOUND_S of the promotion."""
    queues = queues_on_shards(cluster, 3)
    env = bus_env(cluster, queues)
    for q in queues:
        spawn("worker", URL, "--queue", q, "--name", f"w-{q}", "--handler", RECORD, **env)
    stream = Stream(Producer(make_client(bus_settings(cluster), "producer", "t")), queues)
    records = tmp_path / "records.jsonl"
    stream.thread.start()
    wait_for(lambda: len(read_records(records)) >= 300, 20, "300 handled before the failover")
    victim = cluster.primary_for_key(keys.pending(queues[0]))
    started = time.monotonic()
    timing = cluster.failover(cluster.replica_of(victim))
    promoted_at = started + timing.promoted_s
    time.sleep(3.0)
    stream.stop.set()
    stream.thread.join(10)
    confirmed = stream.ids("confirmed")
    wait_for(lambda: confirmed <= {x["id"] for x in read_records(records)}, 20,
             "every confirmed push handled")  # fmt: skip
    wait_for(lambda: [depth(cluster, q) for q in queues] == [0, 0, 0], 10, "queues drained")
    seen = read_records(records)
    handled = Counter(x["id"] for x in seen)
    others = set(stream.outcomes) - confirmed
    duplicates = sum(n - 1 for n in handled.values() if n > 1)
    after = [x["t"] for x in seen if stream.queue_of.get(x["id"]) == queues[0]
             and x["t"] > promoted_at]  # fmt: skip
    resumed_s = min(after) - promoted_at
    lost = len(others - set(handled))
    print(f"\ncluster failover: {timing}; {queues[0]} handled again {resumed_s:.2f} s after "
          f"the promotion; pushes {dict(Counter(stream.outcomes.values()))}, refused "
          f"{dict(stream.refused)}; confirmed lost 0 of {len(confirmed)}; unconfirmed lost "
          f"{lost} of {len(others)}; duplicates {duplicates}")  # fmt: skip
    assert resumed_s <= RESUME_BOUND_S
    assert lost == 0  # a coordinated failover loses no write, confirmed or not


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait-1", "no-wait"])
def test_primary_killed_mid_stream(
    cluster: RedisCluster, spawn: Callable[..., Proc], tmp_path: Path, wait_replicas: int
) -> None:
    """kill -9 of the primary of one of three queues while a producer pushes to all three; the
    replica takes over after the node timeout, and the killed node, restarted, rejoins as its
    replica. The producer and the worker are on the new primary within RESUME_BOUND_S of the
    kill. With WAIT 1 every confirmed push is handled (0 lost; until the restarted node has
    caught up, the shard has no replica and pushes to it are not confirmed). Without it, a
    loss can only be a push made in the last second before the kill (not yet replicated), and
    every loss is counted."""
    queues = queues_on_shards(cluster, 3)
    env = bus_env(cluster, queues)
    for q in queues:
        spawn("worker", URL, "--queue", q, "--name", f"w-{q}", "--handler", RECORD, **env)
    settings = bus_settings(cluster, wait_replicas=wait_replicas, wait_timeout_s=0.5)
    stream = Stream(Producer.from_settings(settings, name="t"), queues)
    records = tmp_path / "records.jsonl"
    stream.thread.start()
    wait_for(lambda: len(read_records(records)) >= 300, 20, "300 handled before the kill")
    victim = cluster.primary_for_key(keys.pending(queues[0]))
    heir = cluster.replica_of(victim)
    killed_at = time.monotonic()
    victim.kill()
    wait_for(lambda: heir.role == "master", 15, "the replica to take over")
    promoted_s = time.monotonic() - killed_at
    victim.start()
    cluster.wait_ok(20)
    rejoined_s = time.monotonic() - killed_at
    time.sleep(2.0)
    stream.stop.set()
    stream.thread.join(10)
    confirmed = stream.ids("confirmed")
    wait_for(lambda: confirmed - stream.ids("confirmed", queues[0])
             <= {x["id"] for x in read_records(records)}, 20,
             "every confirmed push to the other shards handled")  # fmt: skip
    wait_for(lambda: [depth(cluster, q) for q in queues] == [0, 0, 0], 15, "queues drained")
    seen = read_records(records)
    handled = Counter(x["id"] for x in seen)
    lost = stream.ids("confirmed", queues[0]) - set(handled)
    late = {i for i in lost if stream.sent_at[i] > killed_at - 1.0}
    # On the new primary: a push to the shard it answered, and the first such push handled.
    landed = {i for i, o in stream.outcomes.items() if stream.queue_of[i] == queues[0]
              and o != "unconfirmed" and stream.sent_at[i] > killed_at}  # fmt: skip
    producer_s = min(stream.sent_at[i] for i in landed) - killed_at
    worker_s = min(x["t"] for x in seen if x["id"] in landed) - killed_at
    duplicates = sum(n - 1 for n in handled.values() if n > 1)
    others = set(stream.outcomes) - confirmed
    print(f"\ncluster kill -9 (WAIT {wait_replicas}): replica promoted {promoted_s:.2f} s after "
          f"the kill, old primary back as replica {rejoined_s:.2f} s; producer on the new "
          f"primary {producer_s:.2f} s, worker {worker_s:.2f} s; pushes "
          f"{dict(Counter(stream.outcomes.values()))}, refused {dict(stream.refused)}; "
          f"confirmed lost {len(lost)} (made in the last second before the kill: {len(late)}) "
          f"of {len(stream.ids('confirmed', queues[0]))} on that shard; not confirmed lost "
          f"{len(others - set(handled))} of {len(others)}; duplicates {duplicates}")  # fmt: skip
    assert max(producer_s, worker_s) <= RESUME_BOUND_S
    assert lost == late  # every loss was made just before the kill: not yet replicated
    if wait_replicas:
        assert not lost


def test_sharded_subscriber_follows_a_failover_and_counts_what_it_missed(
    cluster: RedisCluster, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLUSTER FAILOVER of the shard of one of three channels while a producer publishes on
    all three (SPUBLISH): the subscriber's link to the demoted node is ended (its channel is
    unsubscribed, or the link drops), it subscribes on the new primary within RESUME_BOUND_S,
    the other two channels go on, and what it counts lost is exactly what it did not get."""
    channels = channels_on_shards(cluster, 3)
    env = bus_env(cluster, channels=channels)
    subscribed = [a for c in channels for a in ("--channel", c)]
    sub = spawn("subscriber", URL, "--name", "s1", *subscribed, "--handler", RECORD, **env)
    wait_for(lambda: [shard_subscribers(cluster, c) for c in channels] == [1, 1, 1], 15,
             "s1 subscribed on each channel's shard")  # fmt: skip
    settings = bus_settings(cluster)
    stream = Stream(Producer.from_settings(settings, name="t"), channels, publish=True)
    records = tmp_path / "records.jsonl"
    stream.thread.start()
    wait_for(lambda: len(read_records(records)) >= 300, 20, "300 received before the failover")
    victim = cluster.primary_for_key(keys.channel(channels[0]))
    heir = cluster.replica_of(victim)
    started = time.monotonic()
    timing = cluster.failover(heir)
    promoted_at = started + timing.promoted_s
    wait_for(lambda: shard_subscribers(cluster, channels[0]) == 1, RESUME_BOUND_S,
             "s1 subscribed on the new primary")  # fmt: skip
    time.sleep(1.0)
    stream.stop.set()
    stream.thread.join(10)
    sent = set(stream.outcomes)  # every sequence number the producer used
    last = max(sent, key=lambda i: stream.sent_at[i])
    wait_for(lambda: last in {x["id"] for x in read_records(records)}, 10, "the last message")
    assert sub.stop() == 0, sub.log()
    seen = read_records(records)
    received = {x["id"] for x in seen}
    missed = sent - received
    admin = make_client(settings, "admin", "t")
    stats = admin.hgetall(keys.stats("subscriber", "s1"))
    counted = int(stats[b"lost"])
    resumed_s = min(x["t"] for x in seen if stream.queue_of.get(x["id"]) == channels[0]
                    and x["t"] > promoted_at) - promoted_at  # fmt: skip
    per_channel = Counter(stream.queue_of[i] for i in missed)
    print(f"\nsharded pub/sub, cluster failover: {timing}; {channels[0]} received again "
          f"{resumed_s:.2f} s after the promotion; published {len(sent)} "
          f"({dict(Counter(stream.outcomes.values()))}, refused {dict(stream.refused)}); "
          f"missed {len(missed)} {dict(per_channel)}, counted lost {counted}")  # fmt: skip
    assert counted == len(missed)
    assert set(per_channel) <= {channels[0]}  # the other shards lost nothing
    assert resumed_s <= RESUME_BOUND_S
