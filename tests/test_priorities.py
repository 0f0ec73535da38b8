"""Priority levels within a queue: a worker takes the highest level that holds a message first,
the oldest first within a level, at-least-once and at-most-once; an idle worker wakes for a
message of any level; a message keeps its level through retries, delays, recovery and
requeues; the depth counts every level."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as drawn

from consumers.worker import Worker
from loadtest.harness.cluster import RedisCluster
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, QueueFull, Settings, keys
from producer.store import scripts
from producer.store.counts import read_balance
from producer.store.deadletters import DeadLetters
from producer.store.envelope import EnvelopeError, decode
from tests.clusterkit import bus_settings, queues_on_shards, start_cluster
from tests.inproc import running
from tests.test_envelope_fast_path import envelopes
from tests.test_worker import make_worker
from tests.webapp import post_json

Q = "default"
PENDING = keys.pending(Q)
DELIVERIES = ["at-least-once", "at-most-once"]


def producer_of(settings: Settings) -> Producer:
    return Producer.from_settings(settings)


def claim(r: redis.Redis, n: int = 100) -> list[str]:
    """The payloads a worker's claim takes now (at-least-once), acknowledged at once."""
    processing = keys.processing(Q, "t")
    raws = scripts.CLAIM(r, (PENDING, processing, keys.tracking(Q)), (n,))
    r.delete(processing)
    r.hincrby(keys.counts(Q), "acked", len(raws))
    return [decode(raw).payload for raw in raws]


def by_priority(pushed: list[tuple[int, str]]) -> list[str]:
    """The order a worker must take ``(priority, payload)`` pushed in that order."""
    return [p for _, p in sorted(pushed, key=lambda x: -x[0])]  # sorted() is stable: FIFO


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_backlog_is_taken_highest_level_first_oldest_first_within_one(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    """600 messages of 4 levels pushed in a shuffled order, before the worker starts: one slot
    handles them level by level, FIFO within each, across claims of 7 (levels change inside a
    claim)."""
    producer = producer_of(settings)
    pushed = [(p, f"{p}-{i}") for i in range(150) for p in ((i * 7) % 10, 9, 0, 4)]
    for priority, payload in pushed:
        producer.push(payload, priority=priority)
    assert read_balance(r, Q)["pending"] == len(pushed)
    seen: list[Envelope] = []
    worker = make_worker(settings.replace(concurrency=1, batch_size=7, delivery=delivery),
                         seen.append)  # fmt: skip
    with running(worker):
        wait_for(lambda: len(seen) >= len(pushed), 20, "every message handled")
    assert [e.payload for e in seen] == by_priority(pushed)
    assert [e.priority for e in seen] == sorted((p for p, _ in pushed), reverse=True)


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_an_idle_worker_wakes_for_a_message_of_any_level(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    """A worker blocked on the empty queue (for 30 s at a time) handles a message of level 7
    within a second: the push moved it where the worker waits."""
    seen: list[Envelope] = []
    worker = make_worker(settings.replace(block_timeout_s=30.0, delivery=delivery), seen.append)
    producer = producer_of(settings)
    with running(worker):
        for n in range(3):
            wait_for(lambda: blocked(r), 5, "the worker blocked in its pop")
            started = time.monotonic()
            producer.push(f"urgent-{n}", priority=7)
            wait_for(lambda: len(seen) > n, 1.0, "the level-7 message handled")  # noqa: B023
            print(f"woken and handled in {time.monotonic() - started:.3f}s")
    assert [e.payload for e in seen] == ["urgent-0", "urgent-1", "urgent-2"]


def blocked(r: redis.Redis) -> bool:
    return any(c.get("cmd") in ("blmove", "brpop") for c in r.client_list())


def test_the_herald_keeps_each_level_in_order(settings: Settings, r: redis.Redis) -> None:
    """The message moved to bus:{q}:pending to wake a worker is taken in its level's turn, not in
    pending's: levels above it first, its later peers after it, and one put in front of it (a
    message given back) sends it back to its own level first."""
    producer = producer_of(settings)
    producer.push("L3-a", priority=3)  # the queue was empty: the herald
    assert r.lrange(PENDING, 0, -1) != [] and r.llen(keys.level(Q, 3)) == 0
    for payload, priority in (("L7", 7), ("L3-b", 3), ("D-a", 0), ("L1", 1)):
        producer.push(payload, priority=priority)
    assert claim(r) == ["L7", "L3-a", "L3-b", "L1", "D-a"]

    producer.push("L5-a", priority=5)  # the herald again
    given_back = producer.push("D-given", priority=0).envelope.encode()
    r.lrem(PENDING, 1, given_back)  # as if a worker had taken it, then gave it back unchanged
    scripts.GIVE_BACK(r, (PENDING, keys.counts(Q)), (given_back,))
    r.hincrby(keys.counts(Q), "taken", 1)  # (give_back uncounts a take that did not happen)
    producer.push("L5-b", priority=5)
    assert claim(r) == ["L5-a", "L5-b", "D-given"]
    assert read_balance(r, Q)["pending"] == 0


def test_depth_counts_every_level_and_the_limit_too(settings: Settings, r: redis.Redis) -> None:
    """A push answers the depth of the whole queue; the depth limit counts every level; the
    stats break it down by level."""
    producer = producer_of(settings)
    depths = [producer.push(i, priority=p).result for i, p in enumerate((0, 9, 9, 2, 0))]
    assert depths == [1, 2, 3, 4, 5]
    assert read_balance(r, Q)["pending"] == 5
    levels = scripts.LEVELS(r, (PENDING,), ())
    assert dict(zip(levels[::2], levels[1::2], strict=True)) == {9: 2, 2: 1, 0: 2}
    limited = producer_of(settings.replace(max_queue_depth=6))
    assert limited.push("x", priority=5).result == 6
    with pytest.raises(QueueFull):
        limited.push("y", priority=9)
    assert read_balance(r, Q)["pending"] == 6


def test_a_message_keeps_its_level_through_delay_retry_and_requeue(
    settings: Settings, r: redis.Redis
) -> None:
    """Delayed, it takes its level when due; failed, it is retried at its level; dead-lettered
    and requeued, it goes back to its level."""
    producer = producer_of(settings)
    producer.push("D", priority=0)  # pending is not empty: no herald below
    producer.push("late-8", priority=8, delay_s=0)
    wait_for(lambda: scripts.MOVE_DUE(r, (keys.delayed(Q), PENDING, keys.tracking(Q)), (100,))
             or r.llen(keys.level(Q, 8)), 2, "due")  # fmt: skip
    assert r.llen(keys.level(Q, 8)) == 1
    assert claim(r) == ["late-8", "D"]

    failures: list[str] = []

    def fail_once(env: Envelope) -> None:
        if env.attempt == 1 and env.payload == "flaky-6":
            failures.append(env.payload)
            raise RuntimeError("once")
        seen.append((env.payload, env.priority, env.attempt))

    seen: list[tuple[str, int, int]] = []
    s = settings.replace(concurrency=1, batch_size=1, retry_backoff_s=0.0, max_attempts=3)
    producer.push("flaky-6", priority=6)
    with running(make_worker(s, fail_once)):
        wait_for(lambda: seen == [("flaky-6", 6, 2)], 5, "retried and handled")
    assert failures == ["flaky-6"]

    raw = producer.push("dead-4", priority=4).envelope.encode()
    assert claim(r) == ["dead-4"]
    r.lpush(keys.dead(Q), json.dumps({"reason": "test", "raw": raw.decode(), "at": 0}))
    assert DeadLetters(r, Q).requeue() == (1, 0)
    assert r.llen(PENDING) == 1 and decode(r.lindex(PENDING, -1)).priority == 4  # the herald
    assert claim(r) == ["dead-4"]


def test_a_priority_push_is_atomic_with_concurrent_claims(
    settings: Settings, r: redis.Redis
) -> None:
    """8 threads push 250 messages each at random levels while 2 workers drain: every message
    is handled once, none stays behind (no herald lost, none moved twice)."""
    producer = producer_of(settings)
    seen: list[Any] = []
    lock = threading.Lock()

    def handle(env: Envelope) -> None:
        with lock:
            seen.append(env.payload)

    def pushes(t: int) -> None:
        for i in range(250):
            producer.push(f"{t}-{i}", priority=(t * 31 + i * 17) % 10)

    s = settings.replace(block_timeout_s=30.0)
    with running(make_worker(s, handle, "w1")), running(make_worker(s, handle, "w2")):
        threads = [threading.Thread(target=pushes, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: len(seen) >= 2000, 20, "2,000 handled")
        time.sleep(0.2)
    assert sorted(seen) == sorted(f"{t}-{i}" for t in range(8) for i in range(250))
    assert read_balance(r, Q)["pending"] == 0


def test_bad_priorities_are_refused_before_anything_is_sent(
    settings: Settings, r: redis.Redis
) -> None:
    producer = producer_of(settings)
    for bad in (-1, 10, 2.5, 2.0, "3", True, 10**30):
        with pytest.raises(ValueError, match="priority must be an integer from 0"):
            producer.push("x", priority=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="priority"):
            producer.push("x", priority=bad, key="k")  # type: ignore[arg-type]
    assert read_balance(r, Q)["pushed"] == 0
    assert producer.push("x", priority=None).envelope.priority == 0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    yield from start_cluster(tmp_path / "cluster")


@pytest.mark.slow
def test_priorities_on_a_cluster_each_queue_on_its_shard(cluster: RedisCluster) -> None:
    """A queue on each of 3 shards: its levels share its slot, so the push, the herald and the
    claim are one script there; a worker per queue takes each backlog in priority order and
    wakes, idle, for a message of a level."""
    queues = queues_on_shards(cluster, 3)
    settings = bus_settings(cluster, queues=tuple(queues), concurrency=1, batch_size=5)
    settings = settings.replace(block_timeout_s=30.0)
    pushed = [(p, f"{p}-{i}") for i in range(20) for p in (0, 8, 3)]
    seen: dict[str, list[Any]] = {q: [] for q in queues}
    with Producer.from_settings(settings, name="t") as producer:
        for q in queues:
            for priority, payload in pushed:
                producer.push(payload, q, priority=priority)
        workers = [Worker(settings, q, "w", seen[q].append) for q in queues]
        with running(workers[0]), running(workers[1]), running(workers[2]):
            wait_for(lambda: all(len(s) == len(pushed) for s in seen.values()), 20, "backlogs")
            for q in queues:
                producer.push("late", q, priority=9)
            wait_for(lambda: all(len(s) > len(pushed) for s in seen.values()), 2, "the late ones")
    for q in queues:
        assert [e.payload for e in seen[q]] == [*by_priority(pushed), "late"]


LEVEL_OF = scripts.Script("level_of", scripts.source("lib/levels.lua") + "return level_of(ARGV[1])")
EDGES = [
    b'{"v":1,"id":"a","priority":5,"payload":1}',
    b'{"v":1,"id":"a","payload":{"priority":5}}',  # the payload's, not the envelope's
    b'{"v":1,"id":"a","payload":{"priority":5},"priority":2}',
    b'{"v":1,"id":"a","priority" : 7 ,"payload":[]}',
    b'{"v":1,"id":"a","priority":5.0,"payload":1}',
    b'{"v":1,"id":"a","priority":5e0,"payload":1}',
    b'{"v":1,"id":"a","priority":"5","payload":1}',
    b'{"v":1,"id":"a","priority":true,"payload":1}',
    b'{"v":1,"id":"a","priority":10,"payload":1}',
    b'{"v":1,"id":"a","priority":null,"payload":1}',
    b'{"v":1,"id":"a","priority":3,"priority":6,"payload":1}',  # a key twice: the last counts
    b'{"v":1,"id":"a","priority":6,"priority":3.5,"payload":1}',
]


def lua_level(r: redis.Redis, raw: bytes) -> int:
    return int(LEVEL_OF(r, (), (raw,)))


@pytest.mark.parametrize("raw", EDGES, ids=range(len(EDGES)))
def test_the_scripts_read_a_messages_level_as_the_envelope_does(r: redis.Redis, raw: bytes) -> None:
    """Where a script puts a message back (retry, recovery, requeue, the mover) is the level the
    worker's handler sees in ``Envelope.priority``."""
    assert lua_level(r, raw) == decode(raw).priority


@drawn(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(envelopes())
def test_the_scripts_and_the_envelope_agree_on_drawn_envelopes(
    redis_server: RedisServer, data: bytes
) -> None:
    try:
        expected = decode(data).priority
    except EnvelopeError:
        return  # garbage: dead-lettered, never put back on a level
    assert lua_level(redis_server.client(), data) == expected, data


def test_post_prodcons_takes_a_priority_and_refuses_a_bad_one(
    client: FlaskClient, r: redis.Redis
) -> None:
    """``"priority"`` over HTTP: the message waits at that level (2.0 counts as 2, as JSON
    Schema says); a bad one is a 400 naming the range, with nothing sent; /pubsub refuses one."""
    status, body = post_json(client, "/prodcons", {"payload": "d", "priority": 0})
    assert status == 202
    for priority in (7, 2.0, None):
        status, body = post_json(client, "/prodcons", {"payload": "x", "priority": priority})
        assert status == 202, body
    assert r.llen(keys.level(Q, 7)) == 1 and r.llen(keys.level(Q, 2)) == 1
    assert body["depth"] == 4
    assert [decode(x).priority for x in r.lrange(keys.level(Q, 7), 0, -1)] == [7]
    for bad in (10, -1, 2.5, "3", True, 10**40):
        status, body = post_json(client, "/prodcons", {"payload": "x", "priority": bad})
        assert status == 400 and "'priority' must be an integer from 0" in body["error"], body
    status, body = post_json(client, "/pubsub", {"payload": "x", "priority": 1})
    assert status == 400 and "priorities apply to queue messages only" in body["error"]
    assert read_balance(r, Q)["pushed"] == 4
    assert claim(r) == ["x", "x", "d", "x"]  # 7, then 2, then the two of priority 0


def test_a_foreign_producer_lpushes_onto_a_level_and_a_worker_finds_it(
    settings: Settings, r: redis.Redis
) -> None:
    """Another language's producer LPUSHes a priority-9 envelope onto bus:{q}:pending:9 itself
    (and sets the gate, or not): an idle worker (blocked for 30 s at a time) handles it within
    the mover's interval. With the gate set (SET bus:{q}:levels 1), a claim takes it at once,
    before the older messages of priority 0."""
    s = settings.replace(block_timeout_s=30.0, mover_interval_s=0.2, concurrency=1)
    seen: list[Envelope] = []
    with running(make_worker(s, seen.append)):
        for n, gate in enumerate((False, True)):  # LPUSH alone; LPUSH and SET the gate
            wait_for(lambda: blocked(r), 5, "the worker blocked in its pop")
            r.lpush(keys.level(Q, 9), b'{"v":1,"id":"cli-9","priority":9,"payload":"nine"}')
            if gate:
                r.set(keys.levels_gate(Q), 1)
            wait_for(lambda: len(seen) > n, 1.0, "the level-9 message handled")  # noqa: B023
    producer = producer_of(settings)
    producer.push_many(["a", "b"])
    r.lpush(keys.level(Q, 9), b'{"v":1,"id":"cli-9b","priority":9,"payload":"nine-b"}')
    assert claim(r, 1) == ["a"]  # no gate, no mover running: the level is not looked at yet
    r.set(keys.levels_gate(Q), 1)
    assert claim(r) == ["nine-b", "b"]


def test_the_same_bytes_pushed_twice_at_a_level_are_two_messages(
    settings: Settings, r: redis.Redis
) -> None:
    """Another producer pushes one envelope's bytes twice onto level 5 (counted, with the
    gate): both are delivered, ahead of priority 0, and the balance holds."""
    raw = b'{"v":1,"id":"twice","priority":5,"payload":"five"}'
    producer_of(settings).push("zero")
    pipe = r.pipeline(transaction=True)
    pipe.lpush(keys.level(Q, 5), raw, raw)
    pipe.hincrby(keys.counts(Q), "pushed", 2)
    pipe.set(keys.levels_gate(Q), 1)
    pipe.execute()
    seen: list[Envelope] = []
    with running(make_worker(settings.replace(concurrency=1), seen.append)):
        wait_for(lambda: len(seen) >= 3, 5, "three deliveries")
    assert [e.payload for e in seen] == ["five", "five", "zero"]
    balance = read_balance(r, Q)
    assert (balance["acked"], balance["unaccounted"]) == (3, 0)
