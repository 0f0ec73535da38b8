"""Time limits: a handler past ``BUS_HANDLER_TIMEOUT_S`` has failed its attempt (retried, then
dead-lettered saying it timed out), its slot serves the next message, and its late result is
discarded; a Python loop is interrupted, a thread blocked in C is given up on (more such threads
than slots: the process exits 76 to be started afresh); an ``async def`` is cancelled, and one
that blocks its event loop costs the others of that loop nothing; SIGTERM ends a worker with a
hung handler within ``BUS_STOP_TIMEOUT_S``.

Real worker processes on a Redis of the test's own; every message accounted for by id.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from producer.store.envelope import decode
from tests.ledger import Ledger
from tests.procs import Proc, read_records
from tests.queuekit import AT_MOST_ONCE, DEAD, PENDING, PROCESSING_GLOB, Q

pytestmark = pytest.mark.slow

STUCK = "tests.handlers_for_tests:stuck"
ASYNC = "tests.handlers_for_tests:async_stuck"
LIMIT = {"BUS_HANDLER_TIMEOUT_S": "1", "BUS_MAX_ATTEMPTS": "2"}


def poisoned(ledger: Ledger, n: int, at: int, how: str) -> list[str]:
    """``n`` numbered messages, the one at ``at`` with ``{"stuck": how}``: their ids."""
    marked: dict[str, Any] = {"stuck": how}
    return [ledger.push(**(marked if i == at else {})) for i in range(n)]


def count(tmp_path: Path, event: str) -> Counter[str]:
    return Counter(x["id"] for x in read_records(tmp_path / "records.jsonl") if x["event"] == event)


def dead(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """The dead letters by message id."""
    return {json.loads(e["raw"])["id"]: e for e in map(json.loads, r.lrange(DEAD, 0, -1))}


def settled(r: redis.Redis, n_dead: int) -> bool:
    return len(dead(r)) == n_dead and not r.llen(PENDING) and not r.keys(PROCESSING_GLOB) and (
        not r.zcard(keys.delayed(Q)))  # fmt: skip


def stat(r: redis.Redis, name: str, field: str) -> int:
    return int(r.hget(keys.stats("worker", f"{Q}:{name}"), field) or 0)


@pytest.mark.parametrize("how", ["sleep", "spin"])
def test_a_hung_handler_times_out_and_the_messages_behind_it_keep_moving(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, how: str
) -> None:
    """A handler that never returns (blocked in C, or looping in Python) among 20 good messages,
    two slots: each attempt ends at the 1 s limit; the message is retried once, then dead with a
    reason that says it timed out; all 20 others are handled once by the same process."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ids = poisoned(ledger, 21, 0, how)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 "--concurrency", "2", **LIMIT)  # fmt: skip
    # While it hangs, the worker's stats say so: a slot busy, the oldest in hand, its limit.
    wait_for(lambda: stat(r, "w", "busy") >= 1 and stat(r, "w", "oldest_started_ms") > 0
             and stat(r, "w", "oldest_limit_ms") == 1000, 5, "the hung handler shown")  # fmt: skip
    wait_for(lambda: settled(r, 1), 20, "the hung message dead and the rest handled")
    assert count(tmp_path, "handled") == Counter(ids[1:])
    assert count(tmp_path, "start")[ids[0]] == 2
    entry = dead(r)[ids[0]]
    assert "timed out" in entry["reason"] and "BUS_HANDLER_TIMEOUT_S" in entry["reason"]
    assert json.loads(entry["raw"])["attempt"] == 2
    wait_for(lambda: stat(r, "w", "timed_out") == 2, 5, "2 time-outs counted")
    assert proc.proc.poll() is None, proc.log()[-2000:]
    if how == "spin":  # interrupted: its thread is back, none is left running
        wait_for(lambda: r.hget(keys.stats("worker", f"{Q}:w"), "abandoned") == b"0", 5,
                 "the interrupted threads ended")  # fmt: skip
    else:  # blocked in C: both threads still run, given up on, and shown
        wait_for(lambda: stat(r, "w", "abandoned") == 2, 5, "2 abandoned threads shown")


def test_more_threads_stuck_than_slots_make_the_worker_exit_76(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Two messages blocked in C past their limit, one slot: after the second the worker has
    more stuck threads than slots and exits 76 (restart it: ``--processes`` does). Each start
    was settled as a failed attempt (timed out, or still running at the exit: as after a
    crash), so each message waits with one attempt more than it was started."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ids = [ledger.push(stuck="sleep") for _ in range(2)]
    limits = {"BUS_HANDLER_TIMEOUT_S": "0.5", "BUS_MAX_ATTEMPTS": "9", "BUS_STOP_TIMEOUT_S": "1"}
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 "--concurrency", "1", **limits)  # fmt: skip
    assert proc.wait(15) == 76, proc.log()[-2000:]
    assert "restarted" in proc.log() and "Traceback" not in proc.log()
    waiting = [decode(raw) for raw in r.lrange(PENDING, 0, -1)]
    starts = count(tmp_path, "start")
    assert {e.id: e.attempt for e in waiting} == {i: starts[i] + 1 for i in ids}
    assert not r.keys(PROCESSING_GLOB)


def test_an_async_handler_past_its_limit_is_cancelled(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """An ``async def`` awaiting forever among 10 good ones: cancelled at its limit each
    attempt, dead after the second; the 10 others handled once."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ids = poisoned(ledger, 11, 3, "await")
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", ASYNC, **LIMIT)
    wait_for(lambda: settled(r, 1), 20, "the hung message dead and the rest handled")
    assert count(tmp_path, "handled") == Counter(i for i in ids if i != ids[3])
    assert "timed out" in dead(r)[ids[3]]["reason"]


def test_an_async_handler_blocking_its_loop_costs_the_others_nothing(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Five ``async def`` handlers await 2 s (their own limit, ``timeout_s``, is 30 s); a sixth
    calls ``time.sleep(4)`` on the loop. At its 1 s limit the worker leaves that loop behind:
    the five are given back unchanged (no attempt counted for them) and handled once on a new
    loop; the sixth times out each attempt and ends dead."""
    r = fresh_redis.client()
    producer = Ledger(fresh_redis).producer
    ids = [producer.push({"sleep_s": 2}, timeout_s=30).envelope.id for _ in range(5)]
    blocker = producer.push({"stuck": "block", "block_s": 4}).envelope.id
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", ASYNC, **LIMIT)
    wait_for(lambda: settled(r, 1), 30, "the blocker dead and the rest handled")
    assert count(tmp_path, "handled") == Counter(ids)
    attempts = {x["attempt"] for x in read_records(tmp_path / "records.jsonl") if x["id"] in ids}
    assert attempts == {1}, "a message that shared the blocked loop was charged an attempt"
    assert "timed out" in dead(r)[blocker]["reason"]


def test_sigterm_with_a_hung_handler_exits_within_the_stop_timeout(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """SIGTERM while a handler hangs (its limit far away): the worker waits BUS_STOP_TIMEOUT_S
    (1 s) for it, then exits 0; the hung message goes back with attempt + 1, as after a crash,
    and the good ones were handled once."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    good = [ledger.push() for _ in range(3)]
    hung = ledger.push(stuck="sleep")
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 BUS_STOP_TIMEOUT_S="1", BUS_HANDLER_TIMEOUT_S="60")  # fmt: skip
    wait_for(lambda: count(tmp_path, "handled") == Counter(good) and count(tmp_path, "start")[hung],
             10, "the good ones handled and the hung one started")  # fmt: skip
    proc.signal(signal.SIGTERM)
    assert proc.wait(6) == 0, proc.log()[-2000:]
    (back,) = [decode(raw) for raw in r.lrange(PENDING, 0, -1)]
    assert (back.id, back.attempt) == (hung, 2)
    assert not r.keys(PROCESSING_GLOB)


def test_at_most_once_a_hung_handler_is_dead_lettered_at_its_limit(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """At-most-once never delivers twice: the hung message is dead-lettered at its first
    limit, saying it timed out; the others are handled once."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ids = poisoned(ledger, 8, 2, "sleep")
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK, *AT_MOST_ONCE, **LIMIT)
    wait_for(lambda: settled(r, 1), 20, "the hung message dead and the rest handled")
    assert count(tmp_path, "start")[ids[2]] == 1
    assert count(tmp_path, "handled") == Counter(i for i in ids if i != ids[2])
    assert "timed out" in dead(r)[ids[2]]["reason"]


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (["--concurrency", "0"], {}, 2, "--concurrency"),
        (["--concurrency", "-3"], {}, 2, "--concurrency"),
        (["--concurrency", "eight"], {}, 2, "--concurrency"),
        ([], {"BUS_CONCURRENCY": "0"}, 78, "BUS_CONCURRENCY"),
        ([], {"BUS_HANDLER_TIMEOUT_S": "0"}, 78, "BUS_HANDLER_TIMEOUT_S"),
        ([], {"BUS_HANDLER_TIMEOUT_S": "1e9"}, 78, "BUS_HANDLER_TIMEOUT_S"),
        ([], {"BUS_STOP_TIMEOUT_S": "-1"}, 78, "BUS_STOP_TIMEOUT_S"),
    ],
)
def test_bad_concurrency_or_limits_are_refused_before_anything_is_taken(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], args: list[str], env: dict[str, str],
    code: int, says: str,
) -> None:  # fmt: skip
    r = fresh_redis.client()
    Ledger(fresh_redis).push_many(2)
    proc = spawn("worker", fresh_redis.url, "--handler", STUCK, *args, **env)
    assert proc.wait(15) == code, proc.log()[-2000:]
    assert says in proc.log() and "Traceback" not in proc.log()
    assert r.llen(PENDING) == 2


def test_a_tracked_message_past_its_own_limit_says_it_timed_out(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A tracked message with its own ``timeout_s`` of 0.5 s (the worker's limit is 60 s): its
    second attempt's record carries the first one's error, which says it timed out past its
    timeout_s; then the record says dead, for the same reason."""
    r = fresh_redis.client()
    producer = Ledger(fresh_redis).producer
    sent = producer.push({"stuck": "sleep"}, track=True, timeout_s=0.5).envelope
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
          BUS_HANDLER_TIMEOUT_S="60", BUS_MAX_ATTEMPTS="2")  # fmt: skip
    record = keys.record(Q, sent.id)
    second = wait_for(lambda: (x := r.hgetall(record)).get(b"attempt") == b"2" and x, 10,
                      "the second attempt")  # fmt: skip
    assert b"timed out" in second[b"error"] and b"its timeout_s" in second[b"error"]
    last = wait_for(lambda: (x := r.hgetall(record)).get(b"state") == b"dead" and x, 10,
                    "dead at its second attempt")  # fmt: skip
    assert b"timed out" in last[b"reason"] and b"its timeout_s" in last[b"reason"]
