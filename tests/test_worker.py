"""The queue worker in-process: FIFO, exactly once in normal operation, retries, dead letters,
recovery of its own in-flight list, at-most-once, prompt stop."""

from __future__ import annotations

import base64
import json
import time

import redis

from consumers.handlers import Reject
from consumers.worker import Worker
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, decode, keys, make_client
from producer.store.envelope import new
from tests.inproc import running


def make_worker(settings: Settings, handler, name: str = "w1", queue: str = "default") -> Worker:
    return Worker(settings, queue, name, handler)


def test_fifo_under_a_backlog(settings: Settings, r: redis.Redis) -> None:
    """1,000 messages queued before the worker starts are handled oldest first, each once (one
    slot: several start in order and finish in any)."""
    producer = Producer(make_client(settings, "producer"))
    sent = [s.envelope.id for s in producer.push_many(list(range(1000)))]
    seen: list[Envelope] = []
    with running(make_worker(settings.replace(concurrency=1), seen.append)):
        wait_for(lambda: len(seen) >= 1000, 20, "1000 messages handled")
    assert [e.id for e in seen] == sent
    assert [e.payload for e in seen] == list(range(1000))
    assert r.llen(keys.pending("default")) == 0
    assert r.llen(keys.processing("default", "w1")) == 0


def test_live_pushes_handled_exactly_once_and_counted(settings: Settings, r: redis.Redis) -> None:
    """Messages pushed while the worker runs are each handled once; stats and ack agree."""
    producer = Producer(make_client(settings, "producer"))
    seen: list[Envelope] = []
    worker = make_worker(settings, seen.append)
    with running(worker):
        ids = [producer.push({"n": i}).envelope.id for i in range(200)]
        wait_for(lambda: len(seen) >= 200, 10, "200 handled")
        time.sleep(0.3)
    assert sorted(e.id for e in seen) == sorted(ids) and len(seen) == 200
    stats = {k.decode(): v.decode() for k, v in r.hgetall(worker.stats.key).items()}
    assert stats["handled"] == "200" and stats["failed"] == "0" and stats["role"] == "worker"
    assert int(stats["lat_count"]) == 200
    assert r.zscore(keys.consumers("default"), "w1") is None  # left the registry on exit


def test_failing_handler_retries_then_dead_letters_once(settings: Settings, r: redis.Redis) -> None:
    """A handler that always fails sees the message max_attempts times; it then sits in dead."""
    settings = settings.replace(max_attempts=3)
    attempts: list[int] = []

    def fail(env: Envelope) -> None:
        attempts.append(env.attempt)
        raise ValueError("no thanks")

    sent = Producer(make_client(settings, "producer")).push("poison").envelope
    with running(make_worker(settings, fail)):
        wait_for(lambda: r.llen(keys.dead("default")) == 1, 10, "dead letter")
        time.sleep(0.3)
    assert attempts == [1, 2, 3]
    assert r.llen(keys.dead("default")) == 1
    entry = json.loads(r.lindex(keys.dead("default"), 0))
    assert "attempt 3" in entry["reason"] and "ValueError: no thanks" in entry["reason"]
    assert decode(entry["raw"]).id == sent.id
    assert r.llen(keys.pending("default")) == 0


def test_a_rejected_message_is_dead_lettered_at_once(settings: Settings, r: redis.Redis) -> None:
    """Reject: no retry; dead at attempt 1 with its reason (a tracked one's record says dead);
    the messages around it are handled."""
    settings = settings.replace(max_attempts=5)
    attempts: list[tuple[object, int]] = []

    def picky(env: Envelope) -> None:
        attempts.append((env.payload, env.attempt))
        if env.payload == "bad":
            raise Reject("payload 'bad' can never be rendered")

    producer = Producer(make_client(settings, "producer"))
    sent = [producer.push(p, track=True).envelope for p in ("ok-1", "bad", "ok-2")]
    with running(make_worker(settings, picky)):
        wait_for(lambda: len(attempts) >= 3 and r.llen(keys.dead("default")) == 1, 10, "done")
        time.sleep(0.3)
    assert attempts == [("ok-1", 1), ("bad", 1), ("ok-2", 1)]
    entry = json.loads(r.lindex(keys.dead("default"), 0))
    assert entry["reason"] == "rejected: payload 'bad' can never be rendered"
    assert decode(entry["raw"]).id == sent[1].id and decode(entry["raw"]).attempt == 1
    record = Producer(make_client(settings, "producer")).record(sent[1].id)
    assert record is not None and record["state"] == "dead"
    assert r.llen(keys.pending("default")) == 0


def test_garbage_is_dead_lettered_and_the_next_message_handled(
    settings: Settings, r: redis.Redis
) -> None:
    """Not JSON, wrong fields, 1 MiB of junk: dead-lettered with raw bytes; the worker goes on."""
    junk = [b"not json", json.dumps({"v": 1, "id": 3}).encode(), b"\xff" * (1 << 20)]
    for raw in junk:
        r.lpush(keys.pending("default"), raw)
    good = Producer(make_client(settings, "producer")).push("after the junk").envelope
    seen: list[Envelope] = []
    with running(make_worker(settings, seen.append)):
        wait_for(lambda: seen, 10, "the good message")
    assert [e.id for e in seen] == [good.id]
    dead = [json.loads(x) for x in r.lrange(keys.dead("default"), 0, -1)]
    assert len(dead) == 3 and all(d["reason"].startswith("undecodable") for d in dead)
    # In whatever order its slots finished them: the 1 MiB of 0xff, not UTF-8, kept as base64.
    (binary,) = [d for d in dead if "raw_b64" in d]
    assert base64.b64decode(binary["raw_b64"]) == junk[2]
    assert {d.get("raw") for d in dead if d is not binary} == {"not json", junk[1].decode()}


def test_own_processing_list_is_recovered_on_start(settings: Settings, r: redis.Redis) -> None:
    """Messages left in the worker's processing list (a crash, a ghost pop) are handled first,
    marked as a second attempt (one slot: in order)."""
    producer = Producer(make_client(settings, "producer"))
    sent = producer.push_many(["a", "b", "c"])
    for _ in sent:  # simulate a previous life that claimed all three, then died
        r.lmove(keys.pending("default"), keys.processing("default", "w1"), "RIGHT", "LEFT")
    later = producer.push("d").envelope
    seen: list[Envelope] = []
    worker = make_worker(settings.replace(concurrency=1), seen.append)
    with running(worker):
        wait_for(lambda: len(seen) >= 4, 10, "4 handled")
    assert [e.payload for e in seen] == ["a", "b", "c", "d"]
    assert [e.attempt for e in seen] == [2, 2, 2, 1] and seen[3].id == later.id
    assert worker.stats.get("recovered") == 3


def test_at_most_once_pops_and_dead_letters_failures(settings: Settings, r: redis.Redis) -> None:
    """BRPOP mode: FIFO, no processing list, a failure is dead-lettered and never retried."""
    settings = settings.replace(delivery="at-most-once")
    calls: list[object] = []

    def handler(env: Envelope) -> None:
        calls.append(env.payload)
        if env.payload == "bad":
            raise RuntimeError("bad")

    Producer(make_client(settings, "producer")).push_many(["one", "bad", "two"])
    with running(make_worker(settings, handler)):
        wait_for(lambda: len(calls) >= 3, 10, "3 handled")
        time.sleep(0.2)
    assert calls == ["one", "bad", "two"]
    assert r.llen(keys.dead("default")) == 1
    assert r.keys(keys.processing_prefix("default") + "*") == []


def test_stop_releases_a_blocked_pop_at_once(settings: Settings) -> None:
    """With a 5 s block timeout, stop() returns in well under a second (CLIENT UNBLOCK)."""
    settings = settings.replace(block_timeout_s=5.0)
    worker = make_worker(settings, lambda env: None)
    with running(worker):
        time.sleep(0.5)  # now blocked in BLMOVE
        started = time.monotonic()
    assert time.monotonic() - started < 1.5


def test_a_late_ghost_pop_is_recovered_while_idle(settings: Settings, r: redis.Redis) -> None:
    """A message that appears in the worker's processing list while it holds nothing (a pop
    Redis served to a dropped connection after the worker had recovered) is given back and
    handled within one block timeout, as attempt 1: it never reached a handler."""
    seen: list[Envelope] = []
    worker = make_worker(settings, seen.append)
    with running(worker):
        time.sleep(0.3)
        # Stand in for Redis serving the stale BLMOVE of a dead connection:
        ghost = new("ghost", src="test", seq=1, mode="prodcons")
        r.lpush(keys.processing("default", "w1"), ghost.encode())
        started = time.monotonic()
        wait_for(lambda: seen, 5, "the ghost handled")
        waited = time.monotonic() - started
    assert [(e.payload, e.attempt) for e in seen] == [("ghost", 1)]
    assert waited < settings.block_timeout_s + 1
    assert r.llen(keys.processing("default", "w1")) == 0
