"""Tracked messages: a record per message, written by the scripts that move it.

``"track": true`` in the envelope and the queue's gate key make the push, claim, settle, mover
and reaper scripts keep ``bus:{q}:msg:<id>``: pending (or scheduled) -> in-flight (worker,
attempt, progress) -> handled (result) | retrying (error) -> ... | dead (reason). These tests
drive it through the scripts directly and through real worker processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.lists import QueueOps
from consumers.moves import ACK, RETRY, tracked_how
from consumers.tracking import encode_result
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, decode, keys, make_client
from producer.store.deadletters import DeadLetters
from producer.store.tracking import read_record
from tests.procs import Proc
from tests.queuekit import HEARTBEAT_TTL_S, REAPER_S, start_workers

Q = "default"
WORK = "tests.handlers_for_tests:work"


def record(r: redis.Redis, msg_id: str) -> dict[str, Any] | None:
    return read_record(r, Q, msg_id)


def wait_state(r: redis.Redis, msg_id: str, want: Callable[[dict[str, Any]], bool], what: str,
               timeout_s: float = 10.0) -> dict[str, Any]:  # fmt: skip
    """Poll the record every 10 ms until ``want`` holds; that record."""

    def check() -> dict[str, Any] | None:
        rec = record(r, msg_id)
        return rec if rec is not None and want(rec) else None

    return wait_for(check, timeout_s, what, every_s=0.01)


def tracked_producer(settings: Settings, **kwargs: Any) -> Producer:
    return Producer(make_client(settings, "producer", "t"), **kwargs)


def test_the_scripts_write_each_state(settings: Settings, r: redis.Redis) -> None:
    """Push, claim, fail and retry, claim again, ack: each script writes its state."""
    sent = tracked_producer(settings).push({"n": 1}, Q, track=True)
    env = sent.envelope
    assert env.track and sent.result == 1
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "pending" and rec["attempt"] == 1
    assert rec["queue"] == Q and rec["created_ms"] == rec["pending_ms"]
    assert 86_000_000 < rec["expires_in_ms"] <= 86_400_000  # BUS_RESULT_TTL_S's default
    ops = QueueOps(r, Q)
    (raw,) = ops.claim("w1", 10)
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "in-flight" and rec["worker"] == "w1"
    assert ops.progress(env, "w1", 0.5, "half") and not ops.progress(env, "w2", 0.6, "not mine")
    rec = record(r, env.id)
    assert rec is not None and (rec["progress"], rec["progress_text"]) == (0.5, "half")
    retry = tracked_how(RETRY, env, "RuntimeError: boom")
    assert ops.settle("w1", [(raw, env.next_attempt().encode(), retry)]) == (1, 0)
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "retrying" and rec["attempt"] == 1
    assert rec["error"] == "RuntimeError: boom"
    (raw2,) = ops.claim("w2", 10)
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "in-flight" and rec["attempt"] == 2
    assert rec["worker"] == "w2" and "progress" not in rec  # a new attempt starts at nothing
    env2 = decode(raw2)
    assert ops.settle("w2", [(raw2, b'{"ok":true}', tracked_how(ACK, env2))]) == (1, 0)
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "handled" and rec["final"]
    assert rec["result"] == {"ok": True} and rec["attempt"] == 2 and rec["progress"] == 1.0
    # Each stamp is when the state was last entered: the second in-flight came after the retry.
    stamps = [rec[k] for k in ("created_ms", "retrying_ms", "in_flight_ms", "handled_ms")]
    assert stamps == sorted(stamps)


def test_dead_then_requeued(settings: Settings, r: redis.Redis) -> None:
    env = tracked_producer(settings).push(1, Q, track=True).envelope
    ops = QueueOps(r, Q)
    (raw,) = ops.claim("w1", 1)
    assert ops.settle("w1", [ops.dead_move(raw, "handler failed on attempt 1: boom", "w1", env)])
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "dead" and rec["final"]
    assert rec["reason"] == "handler failed on attempt 1: boom"
    assert DeadLetters(r, Q).requeue() == (1, 0)
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "pending" and rec["attempt"] == 1
    assert rec["requeued_ms"] >= rec["dead_ms"]


def test_untracked_messages_leave_no_record(settings: Settings, r: redis.Redis) -> None:
    """Not even with the gate open, nor when the payload says "track": true."""
    producer = tracked_producer(settings)
    producer.push(1, Q, track=True)  # opens the gate
    sent = producer.push({"track": True}, Q)
    ops = QueueOps(r, Q)
    claimed = ops.claim("w1", 10)
    assert len(claimed) == 2
    ops.settle("w1", [(raw, b"", ACK) for raw in claimed])
    assert record(r, sent.envelope.id) is None
    assert r.keys(keys.record(Q, "*")) == [keys.record(Q, producer_ids(r, claimed)[0]).encode()]


def producer_ids(r: redis.Redis, raws: list[bytes]) -> list[str]:
    return [decode(raw).id for raw in raws if decode(raw).track]


def test_a_foreign_producer_tracks_with_the_envelope_field_and_the_gate(r: redis.Redis) -> None:
    """Another language: SET the gate, LPUSH an envelope with "track": true (spaced JSON)."""
    raw = b'{"v": 1, "id": "order-7", "track": true, "payload": {"total": 3}}'
    r.lpush(keys.pending(Q), raw)
    ops = QueueOps(r, Q)
    ops.settle("w1", [(m, m, "R") for m in ops.claim("w1", 1)])  # no gate: nothing written
    assert record(r, "order-7") is None
    r.set(keys.tracking(Q), 60_000, px=60_000)
    (claimed,) = ops.claim("w1", 1)
    rec = record(r, "order-7")
    assert rec is not None and rec["state"] == "in-flight" and rec["attempt"] == 1
    assert 59_000 < rec["expires_in_ms"] <= 60_000
    ops.settle("w1", [(claimed, claimed, tracked_how("R", decode(claimed)))])  # given back
    rec = record(r, "order-7")
    assert rec is not None and rec["state"] == "pending"


def test_records_expire_after_the_ttl(settings: Settings, r: redis.Redis) -> None:
    producer = tracked_producer(settings, result_ttl_s=1.0)
    env = producer.push(1, Q, track=True).envelope
    ops = QueueOps(r, Q)
    (raw,) = ops.claim("w1", 1)
    ops.settle("w1", [(raw, b"", tracked_how(ACK, env))])
    rec = record(r, env.id)
    assert rec is not None and rec["state"] == "handled" and rec["expires_in_ms"] <= 1000
    wait_for(lambda: record(r, env.id) is None, 3, "the record expired")
    wait_for(lambda: not r.exists(keys.tracking(Q)), 1, "the gate expired with it")


def test_a_scheduled_message_is_pending_when_due(settings: Settings, r: redis.Redis) -> None:
    sent = tracked_producer(settings).push(1, Q, track=True, delay_s=0.2)
    rec = record(r, sent.envelope.id)
    assert rec is not None and rec["state"] == "scheduled" and rec["due_ms"] == sent.due_ms
    ops = QueueOps(r, Q)
    assert ops.move_due() == 0
    time.sleep(0.25)
    assert ops.move_due() == 1
    rec = record(r, sent.envelope.id)
    assert rec is not None and rec["state"] == "pending" and rec["pending_ms"] >= rec["due_ms"]


def test_a_queue_can_track_every_message(settings: Settings, r: redis.Redis) -> None:
    producer = tracked_producer(settings, track_queues=[Q])
    tracked = producer.push_many([1, 2], Q)
    other = producer.push(3, "other")
    untracked = producer.push(4, Q, track=False)
    assert all(record(r, s.envelope.id) for s in tracked)
    assert read_record(r, "other", other.envelope.id) is None
    assert record(r, untracked.envelope.id) is None


def test_results_are_bounded_json() -> None:
    assert encode_result(None, 10) == (b"", "")
    assert encode_result({"a": [1, 2]}, 100) == (b'{"a":[1,2]}', "")
    data, why = encode_result("x" * 20, 10)
    assert data == b"" and "22 bytes of JSON, over BUS_RESULT_MAX_BYTES (10)" in why
    data, why = encode_result({1, 2}, 100)
    assert data == b"" and "returned a set, not JSON" in why
    data, why = encode_result(float("nan"), 100)
    assert data == b"" and "not JSON" in why


@pytest.mark.slow
def test_a_worker_reports_progress_then_the_result(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A slow handler's progress is visible while it runs; its return value is the result."""
    start_workers(spawn, r, settings.redis_url, "w1", handler=WORK)
    producer = tracked_producer(settings)
    job = {"steps": 4, "step_s": 0.4, "result": {"pages": 4}}
    env = producer.push(job, Q, track=True).envelope  # taken by the idle worker's blocking pop
    seen = wait_state(r, env.id, lambda x: x["state"] == "in-flight" and 0 < x.get("progress", 0)
                      < 1, "progress reported while the handler runs")  # fmt: skip
    assert seen["worker"] == "w1" and seen["progress_text"].startswith("step ")
    done = wait_state(r, env.id, lambda x: x["final"], "handled")
    assert done["state"] == "handled" and done["result"] == {"pages": 4}
    assert done["attempt"] == 1 and done["worker"] == "w1"
    assert done["in_flight_ms"] <= seen["progress_ms"] <= done["handled_ms"]
    # A backlog: the first by the blocking pop, the others by the claim script.
    envs = [producer.push({"steps": 1, "step_s": 0.3}, Q, track=True).envelope for _ in range(3)]
    for e in envs:
        wait_state(r, e.id, lambda x: x["state"] == "in-flight", f"{e.id} in flight")
    for e in envs:
        assert wait_state(r, e.id, lambda x: x["final"], "handled")["state"] == "handled"


@pytest.mark.slow
def test_a_result_over_the_limit_is_refused_in_the_record(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc]
) -> None:
    start_workers(spawn, r, settings.redis_url, "w1", handler=WORK, BUS_RESULT_MAX_BYTES="100")
    producer = tracked_producer(settings)
    big = producer.push({"result_bytes": 500}, Q, track=True).envelope
    small = producer.push({"result_bytes": 50}, Q, track=True).envelope
    rec = wait_state(r, big.id, lambda x: x["final"], "the big one handled")
    assert rec["state"] == "handled" and "result" not in rec
    assert "502 bytes of JSON, over BUS_RESULT_MAX_BYTES (100): not stored" in rec["result_error"]
    rec = wait_state(r, small.id, lambda x: x["final"], "the small one handled")
    assert rec["result"] == "x" * 50 and "result_error" not in rec


@pytest.mark.slow
def test_retries_then_dead_are_in_the_record(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc]
) -> None:
    env_vars = {"BUS_MAX_ATTEMPTS": "3", "BUS_RETRY_BACKOFF_S": "0.5",
                "BUS_MOVER_INTERVAL_S": "0.1"}  # fmt: skip
    start_workers(spawn, r, settings.redis_url, "w1", handler=WORK, **env_vars)
    env = tracked_producer(settings).push({"fail": True}, Q, track=True).envelope
    for attempt in (1, 2):
        rec = wait_state(r, env.id, lambda x, a=attempt: x["state"] == "retrying"
                         and x["attempt"] == a, f"retrying after attempt {attempt}")  # fmt: skip
        assert rec["error"] == f"RuntimeError: refusing {env.id}"
        assert rec["due_ms"] >= rec["retrying_ms"] + 500 * 2 ** (attempt - 1)
    rec = wait_state(r, env.id, lambda x: x["final"], "dead")
    assert rec["state"] == "dead" and rec["attempt"] == 3
    assert rec["reason"].startswith("handler failed on attempt 3: Traceback")
    assert r.llen(keys.dead(Q)) == 1


@pytest.mark.slow
def test_a_killed_workers_message_is_redelivered_and_the_record_follows(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc]
) -> None:
    """kill -9 mid-handler: the reaper of another worker requeues it (retrying, attempt 1 of
    w1), that worker takes it (in-flight, attempt 2) and handles it."""
    env_vars = {"BUS_REAPER_INTERVAL_S": str(REAPER_S)}
    workers = start_workers(spawn, r, settings.redis_url, "w1", handler=WORK, **env_vars)
    env = tracked_producer(settings).push({"steps": 10, "step_s": 0.3}, Q, track=True).envelope
    wait_state(r, env.id, lambda x: x["state"] == "in-flight" and x.get("progress", 0) > 0,
               "w1 at work")  # fmt: skip
    workers["w1"].proc.kill()
    killed = time.monotonic()
    start_workers(spawn, r, settings.redis_url, "w2", handler=WORK, **env_vars)
    rec = wait_state(r, env.id, lambda x: x.get("worker") == "w2", "w2 took it over", 15)
    took_s = time.monotonic() - killed
    assert rec["attempt"] == 2 and "retrying_ms" in rec
    assert took_s <= HEARTBEAT_TTL_S + REAPER_S + 1.0
    done = wait_state(r, env.id, lambda x: x["final"], "handled by w2", 10)
    assert done["state"] == "handled" and done["attempt"] == 2 and done["worker"] == "w2"
    assert "error" not in done  # attempt 1's, cleared when attempt 2 was handled
    print(f"\ntracking: kill -9 of w1 to w2's in-flight {took_s:.2f} s")
