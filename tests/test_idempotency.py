"""Idempotency keys on Producer.push (producer/store/once.py): a push made at most once per key
within its window, however often and however concurrently it is retried.

- A repeat with the same key and request pushes nothing and returns the first push's envelope
  and answer, marked as a repeat; the queue holds one message, counted once in its balance,
  and the repeat takes no sequence number.
- The same key with another request (payload, queue options) is refused and pushes nothing.
- 16 threads pushing with one key push once; each gets the same envelope.
- Delayed and tracked pushes: one scheduled message, one record; a repeat returns the due time.
- The window ends: the key is forgotten (its hash expires) and a push goes through again.
- A push refused for the depth limit keeps no key: the retry goes through once there is room.
- A bad key is refused before anything is sent.
- A publish with a key: one message reaches the subscriber; the key with another payload is
  refused.
- On a cluster, each queue's key lives in its slot and each channel's in its channel's: keyed
  pushes and (sharded) publishes on three shards are each made once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from loadtest.harness.cluster import RedisCluster
from producer import IdempotencyConflict, Producer, QueueFull, keys
from producer.store.counts import read_balance
from tests.clusterkit import bus_settings, channels_on_shards, queues_on_shards, start_cluster

Q = "jobs"


def test_a_repeat_pushes_nothing_and_returns_the_first_answer(r: redis.Redis) -> None:
    producer = Producer(r)
    first = producer.push({"order": 7}, Q, key="order-7")
    again = producer.push({"order": 7}, Q, key="order-7")
    assert (first.repeat, again.repeat) == (False, True)
    assert again.envelope == first.envelope and again.result == first.result == 1
    assert r.llen(keys.pending(Q)) == 1
    assert read_balance(r, Q)["pushed"] == 1
    assert producer.push({"order": 8}, Q).envelope.seq == first.envelope.seq + 1  # none taken
    window_ms = r.pttl(keys.once(Q, "order-7"))
    assert 3_500_000 < window_ms <= 3_600_000  # the default window, an hour


@pytest.mark.parametrize(
    "change",
    [{"payload": {"order": 8}}, {"delay_s": 5}, {"track": True}, {"timeout_s": 3}],
)
def test_the_same_key_for_another_request_is_refused(r: redis.Redis, change: dict) -> None:
    producer = Producer(r)
    producer.push({"order": 7}, Q, key="k-1")
    request = {"payload": {"order": 7}} | change
    with pytest.raises(IdempotencyConflict, match="k-1"):
        producer.push(request.pop("payload"), Q, key="k-1", **request)
    assert r.llen(keys.pending(Q)) == 1 and r.zcard(keys.delayed(Q)) == 0


def test_concurrent_repeats_push_once(r: redis.Redis) -> None:
    producer = Producer(r)
    got: list[object] = []
    start = threading.Barrier(16)

    def push() -> None:
        start.wait()
        got.append(producer.push({"n": 1}, Q, key="once-only"))

    threads = [threading.Thread(target=push) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 16 and r.llen(keys.pending(Q)) == 1
    assert len({s.envelope.id for s in got}) == 1  # type: ignore[attr-defined]
    assert sum(not s.repeat for s in got) == 1  # type: ignore[attr-defined]


def test_a_publish_is_made_once_per_key(r: redis.Redis) -> None:
    producer = Producer(r)
    sub = r.pubsub()
    sub.subscribe(keys.channel("news"))
    assert sub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    first = producer.publish("flash", "news", key="flash-1")
    again = producer.publish("flash", "news", key="flash-1")
    assert (first.result, first.repeat, again.repeat) == (1, False, True)
    assert again.envelope == first.envelope and again.result == 1
    with pytest.raises(IdempotencyConflict):
        producer.publish("other", "news", key="flash-1")
    got = [sub.get_message(timeout=0.5) for _ in range(3)]
    assert [m["data"] for m in got if m] == [first.envelope.encode()]
    assert producer.publish("next", "news").envelope.seq == first.envelope.seq + 1
    sub.close()


def test_delayed_and_tracked_pushes_are_made_once(r: redis.Redis) -> None:
    producer = Producer(r)
    first = producer.push("report", Q, delay_s=60, track=True, key="report-2026-12")
    again = producer.push("report", Q, delay_s=60, track=True, key="report-2026-12")
    assert again.repeat and again.due_ms == first.due_ms and first.due_ms is not None
    assert r.zcard(keys.delayed(Q)) == 1 and r.llen(keys.pending(Q)) == 0
    assert r.hget(keys.record(Q, first.envelope.id), "state") == b"scheduled"
    assert r.keys(f"bus:{{{Q}}}:msg:*") == [keys.record(Q, first.envelope.id).encode()]


def test_the_key_is_forgotten_when_its_window_ends(r: redis.Redis) -> None:
    producer = Producer(r, idempotency_window_s=0.2)
    first = producer.push(1, Q, key="short")
    time.sleep(0.3)
    assert not r.exists(keys.once(Q, "short"))
    second = producer.push(1, Q, key="short")
    assert not second.repeat and second.envelope.id != first.envelope.id
    assert r.llen(keys.pending(Q)) == 2


def test_a_full_queue_keeps_no_key(r: redis.Redis) -> None:
    producer = Producer(r, max_queue_depth=1)
    producer.push(0, Q)
    with pytest.raises(QueueFull):
        producer.push(1, Q, key="when-there-is-room")
    assert not r.exists(keys.once(Q, "when-there-is-room"))
    r.rpop(keys.pending(Q))
    sent = producer.push(1, Q, key="when-there-is-room")
    assert not sent.repeat and r.lrange(keys.pending(Q), 0, -1) == [sent.envelope.encode()]


@pytest.mark.parametrize("bad", ["", "a b", "x" * 256, "caf\u00e9", "tab\t", 7])
def test_a_bad_key_is_refused_before_anything_is_sent(r: redis.Redis, bad: object) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        Producer(r).push(1, Q, key=bad)  # type: ignore[arg-type]
    assert r.dbsize() == 0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    yield from start_cluster(tmp_path / "cluster")


@pytest.mark.slow
def test_keyed_pushes_on_a_cluster_are_made_once_on_every_shard(cluster: RedisCluster) -> None:
    queues, channels = queues_on_shards(cluster, 3), channels_on_shards(cluster, 3)
    with Producer.from_settings(bus_settings(cluster), name="t") as producer:
        for q in queues:
            first = producer.push({"q": q}, q, key="same-key", track=True)
            again = producer.push({"q": q}, q, key="same-key", track=True)
            assert again.repeat and again.envelope == first.envelope
        for ch in channels:  # sharded pub/sub: the script publishes on the channel's shard
            first = producer.publish({"ch": ch}, ch, key="same-key")
            assert producer.publish({"ch": ch}, ch, key="same-key").envelope == first.envelope
    for q in queues:
        node = cluster.primary_for_key(keys.pending(q)).client()
        assert node.llen(keys.pending(q)) == 1 and node.exists(keys.once(q, "same-key"))
    for ch in channels:
        once_key = keys.channel_once(ch, "same-key")
        assert (
            cluster.primary_for_key(once_key).port == cluster.primary_for_key(keys.channel(ch)).port
        )
        assert cluster.primary_for_key(once_key).client().exists(once_key)
