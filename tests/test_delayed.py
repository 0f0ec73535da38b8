"""Delayed delivery: ``bus:{q}:delayed``, the workers' mover, ``"delay_s"`` over HTTP.

A delayed message waits in the queue's zset, scored by when it is due on Redis's clock; every
``BUS_MOVER_INTERVAL_S`` each worker's mover makes the due ones pending, oldest due first, in
one script. So a message is never handled before it is due, and is handled within the mover
interval after (plus the claim), with no loss or duplicate when movers race or workers restart.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from consumers.lists import QueueOps
from loadtest.harness.waits import wait_for
from producer import Producer, QueueFull, Settings, decode, keys, make_client
from tests.procs import Proc, read_records
from tests.queuekit import FAIL, RECORD, start_workers
from tests.webapp import MakeApp, assert_json, post_json

Q = "default"
MOVER_S = 0.3  # the workers' BUS_MOVER_INTERVAL_S in the end-to-end test
CLAIM_SLACK_S = 0.3  # from pending to the handler: a wake-up and a claim, on a busy machine


def redis_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def test_a_delay_waits_in_the_zset_due_on_redis_clock(settings: Settings, r: redis.Redis) -> None:
    producer = Producer(make_client(settings, "producer", "t"))
    before = redis_ms(r)
    sent = producer.push({"n": 1}, Q, delay_s=2.5)
    after = redis_ms(r)
    assert sent.due_ms is not None and before + 2500 <= sent.due_ms <= after + 2500
    assert sent.result == 1  # how many wait
    assert r.llen(keys.pending(Q)) == 0
    (member, score), = r.zrange(keys.delayed(Q), 0, -1, withscores=True)  # fmt: skip
    assert decode(member).id == sent.envelope.id and int(score) == sent.due_ms

    at = producer.push({"n": 2}, Q, not_before=1_000_000_000.5)  # long past: due at once
    assert at.due_ms == 1_000_000_000_500
    assert QueueOps(r, Q).move_due() == 1  # only the due one
    assert [decode(m).payload for m in r.lrange(keys.pending(Q), 0, -1)] == [{"n": 2}]
    assert r.zcard(keys.delayed(Q)) == 1


def test_bad_delays_are_refused_before_anything_is_sent(settings: Settings, r: redis.Redis) -> None:
    producer = Producer(make_client(settings, "producer", "t"))
    for kwargs in ({"delay_s": -1}, {"delay_s": float("nan")}, {"delay_s": 1, "not_before": 5}):
        with pytest.raises(ValueError):
            producer.push(1, Q, **kwargs)  # type: ignore[arg-type]
    assert r.zcard(keys.delayed(Q)) == 0 and r.llen(keys.pending(Q)) == 0


def test_the_depth_limit_counts_delayed_messages(settings: Settings, r: redis.Redis) -> None:
    producer = Producer(make_client(settings, "producer", "t"), max_queue_depth=3)
    producer.push_many([1, 2], Q, delay_s=60)
    producer.push(3, Q)
    with pytest.raises(QueueFull):
        producer.push(4, Q, delay_s=60)
    with pytest.raises(QueueFull):
        producer.push(5, Q)
    assert r.zcard(keys.delayed(Q)) == 2 and r.llen(keys.pending(Q)) == 1


def test_due_messages_become_pending_in_push_order(settings: Settings, r: redis.Redis) -> None:
    producer = Producer(make_client(settings, "producer", "t"))
    producer.push_many([{"n": i} for i in range(5)], Q, not_before=2.0)  # due, together
    producer.push({"n": 5}, Q, not_before=1.0)  # due before them
    assert QueueOps(r, Q).move_due(batch=2) == 6  # in batches of 2
    claimed = QueueOps(r, Q).claim("w1", 10)  # oldest first
    assert [decode(m).payload["n"] for m in claimed] == [5, 0, 1, 2, 3, 4]


def test_racing_movers_move_each_message_once(settings: Settings, r: redis.Redis) -> None:
    producer = Producer(make_client(settings, "producer", "t"))
    for i in range(20):
        producer.push_many([{"n": 100 * i + j} for j in range(100)], Q, not_before=1.0)
    moved: list[int] = []
    movers = [threading.Thread(target=lambda: moved.append(QueueOps(r, Q).move_due(50)))
              for _ in range(4)]  # fmt: skip
    for t in movers:
        t.start()
    for t in movers:
        t.join()
    assert sum(moved) == 2000
    pending = [decode(m).payload["n"] for m in r.lrange(keys.pending(Q), 0, -1)]
    assert sorted(pending) == list(range(2000))  # each exactly once


def test_http_delay_fields(make_app: MakeApp, settings: Settings, r: redis.Redis) -> None:
    c = make_app(settings).test_client()
    code, body = post_json(c, "/prodcons", {"payload": 1, "delay_s": 30})
    assert code == 202 and body["scheduled"] == 1 and body["due_ms"] > redis_ms(r) + 29_000
    assert set(body) == {"id", "queue", "scheduled", "due_ms", "src", "seq"}
    for bad in ({"delay_s": "5"}, {"delay_s": -1}, {"delay_s": True}, {"delay_s": 10**9},
                {"not_before": 1e12}, {"delay_s": 1, "not_before": 1}):  # fmt: skip
        code, body = post_json(c, "/prodcons", {"payload": 1, **bad})
        assert code == 400, (bad, body)
        assert "delay_s" in body["error"] or "not_before" in body["error"]
    code, body = post_json(c, "/pubsub", {"payload": 1, "delay_s": 1})
    assert code == 400 and "unknown fields ['delay_s']" in body["error"]
    stats = assert_json(c.get("/api/stats"))["queues"][Q]
    assert stats["scheduled"] == 1 and 25_000 < stats["next_due_in_ms"] <= 30_000
    assert r.zcard(keys.delayed(Q)) == 1 and r.llen(keys.pending(Q)) == 0


@pytest.mark.slow
def test_delayed_messages_arrive_on_time_across_a_worker_restart(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """60 messages due over 3 s, two workers, one killed with SIGKILL and started again midway:
    each handled exactly once, never before it was due, and within the mover interval (and a
    claim) after."""
    env = {"BUS_MOVER_INTERVAL_S": str(MOVER_S)}
    workers = start_workers(spawn, r, settings.redis_url, "w1", "w2", **env)
    producer = Producer(make_client(settings, "producer", "t"))
    due: dict[str, float] = {}  # id -> when due, wall clock (Redis runs on this host)
    offset_ms = time.time() * 1000 - redis_ms(r)
    for i in range(60):
        sent = producer.push({"n": i}, Q, delay_s=0.5 + (i % 12) * 0.25)
        assert sent.due_ms is not None
        due[sent.envelope.id] = (sent.due_ms + offset_ms) / 1000
    time.sleep(1.0)
    os.kill(workers["w1"].proc.pid, signal.SIGKILL)
    spawn("worker", settings.redis_url, "--name", "w1b", "--handler", RECORD, **env)
    records = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(records)) >= 60, 20, "60 delayed messages handled")
    time.sleep(MOVER_S + CLAIM_SLACK_S)  # nothing more may come
    handled = [x for x in read_records(records) if x["event"] == "handled"]
    ids = [x["id"] for x in handled]
    assert len(ids) == len(set(ids)) == 60 and set(ids) == set(due)
    lateness = [x["wall"] - due[x["id"]] for x in handled]
    assert min(lateness) >= -0.005, "handled before it was due"
    assert max(lateness) <= MOVER_S + CLAIM_SLACK_S, f"late by {max(lateness):.3f} s"
    assert r.zcard(keys.delayed(Q)) == 0
    print(f"\ndelayed: 60 of 60, lateness {min(lateness):.3f}..{max(lateness):.3f} s "
          f"(bound {MOVER_S} s mover interval + {CLAIM_SLACK_S} s claim)")  # fmt: skip


@pytest.mark.slow
def test_retry_backoff_doubles_per_attempt_through_the_zset(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """BUS_RETRY_BACKOFF_S 0.4, 4 attempts: the retries come 0.4, 0.8 and 1.6 s after each
    failure (each within the mover interval and a claim), then one dead letter."""
    env = {"BUS_MOVER_INTERVAL_S": "0.1", "BUS_RETRY_BACKOFF_S": "0.4", "BUS_MAX_ATTEMPTS": "4"}
    start_workers(spawn, r, settings.redis_url, "w1", handler=FAIL, **env)
    Producer(make_client(settings, "producer", "t")).push({"n": 1}, Q)
    wait_for(lambda: r.llen(keys.dead(Q)) == 1, 15, "the message dead-lettered")
    attempts = [x for x in read_records(tmp_path / "records.jsonl") if x["event"] == "attempt"]
    assert [x["attempt"] for x in attempts] == [1, 2, 3, 4]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(attempts)]
    for gap, backoff in zip(gaps, (0.4, 0.8, 1.6), strict=True):
        assert backoff <= gap <= backoff + 0.1 + CLAIM_SLACK_S, (gaps, backoff)
    assert r.zcard(keys.delayed(Q)) == 0 and r.llen(keys.pending(Q)) == 0
    print("\nretry backoff: gaps " + ", ".join(f"{g:.3f}" for g in gaps) + " s (0.4, 0.8, 1.6)")
