"""Handlers that take next to nothing run in the worker's own thread (a switch to a slot would
cost more than they do); one that then hangs, dies or ends the process costs no more there than
in a slot: a new thread takes the worker's loop over from one held up past 50 ms, the hung
message times out and is retried, then dead-lettered; the others keep moving; SIGTERM, SystemExit
and at-most-once end as they do in a slot; a link broken again and again during a fast drain
strands nothing it had queued to run.

Real worker processes on a Redis of the test's own. Each test first drains 2,000 messages whose
handler returns at once (unrecorded), so that the worker has measured them fast; every recorded
message is accounted for by id, and the records name the thread that ran it.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from producer.store.envelope import decode, new
from tests.ledger import Ledger
from tests.procs import Proc, read_records
from tests.queuekit import AT_MOST_ONCE, DEAD, PENDING, PROCESSING_GLOB, Q
from tests.test_time_limits import LIMIT, STUCK, count, dead, settled, stat

pytestmark = pytest.mark.slow

POISON = "tests.handlers_for_tests:poison"
WARM = 2000


def warm_up(r: redis.Redis, name: str = "w") -> None:
    """Push WARM quick messages at once and wait until worker ``name`` handled them all."""
    before = stat(r, name, "handled")
    raws = [new({"quick": True}, src="warm", seq=i + 1).encode() for i in range(WARM)]
    r.lpush(PENDING, *raws)
    wait_for(lambda: stat(r, name, "handled") >= before + WARM, 20, "the quick ones handled")


def threads(tmp_path: Path, message_id: str) -> list[str]:
    """The names of the threads that started ``message_id``, in order."""
    return [x["thread"] for x in read_records(tmp_path / "records.jsonl")
            if x["id"] == message_id and x["event"] == "start"]  # fmt: skip


def ran_in_the_workers_thread(thread: str) -> bool:
    return thread.startswith("worker-") and not thread.startswith("worker-stats")


def started(proc: Proc, r: redis.Redis) -> None:
    wait_for(lambda: r.zcard(keys.consumers(Q)) == 1, 10, "the worker registered")


@pytest.mark.parametrize("how", ["sleep", "spin"])
def test_a_hang_in_the_workers_own_thread_is_taken_over(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, how: str
) -> None:
    """Measured fast, then a handler that never returns (blocked in C, or looping in Python),
    run in the worker's own thread: after 50 ms another thread takes the loop over and handles
    the 20 messages behind it; the hung one times out at 1 s, is retried once, then is dead
    with a reason that says so. Its first thread is counted as abandoned if blocked in C, and
    comes back if interrupted."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 "--concurrency", "2", **LIMIT)  # fmt: skip
    started(proc, r)
    warm_up(r)
    hung = ledger.push(stuck=how)
    wait_for(lambda: count(tmp_path, "start")[hung] == 1, 5, "the hung one started")
    good = [ledger.push() for _ in range(20)]
    wait_for(lambda: count(tmp_path, "handled") == Counter(good), 10, "the 20 behind it handled")
    wait_for(lambda: settled(r, 1), 20, "the hung message dead and the rest handled")
    assert ran_in_the_workers_thread(threads(tmp_path, hung)[0]), threads(tmp_path, hung)
    assert count(tmp_path, "start")[hung] == 2 and hung not in count(tmp_path, "handled")
    entry = dead(r)[hung]
    assert "timed out" in entry["reason"] and decode(entry["raw"]).attempt == 2
    assert "another took over" in proc.log()
    wait_for(lambda: stat(r, "w", "timed_out") == 2, 5, "2 time-outs counted")
    assert proc.proc.poll() is None, proc.log()[-2000:]
    abandoned = 0 if how == "spin" else 2  # interrupted: back; blocked in C: still running
    wait_for(lambda: stat(r, "w", "abandoned") == abandoned, 5, f"{abandoned} abandoned shown")
    warm_up(r)  # and it goes on running them in its (new) own thread
    last = ledger.push()
    wait_for(lambda: count(tmp_path, "handled")[last] == 1, 5, "one more handled")
    assert "Traceback" not in proc.log()


def test_one_slot_stays_one_at_a_time_when_its_own_thread_is_taken_over(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """``--concurrency 1``, measured fast, then a handler that takes 0.3 s and five behind it:
    the worker's own thread is taken over after 50 ms, yet none of the five starts before the
    slow one returned, and they start in queue order, each after the one before returned."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 "--concurrency", "1")  # fmt: skip
    started(proc, r)
    warm_up(r)
    ids = [ledger.push(sleep_s=0.3)] + [ledger.push() for _ in range(5)]
    wait_for(lambda: count(tmp_path, "handled") == Counter(ids), 10, "all six handled")
    assert "another took over" in proc.log()
    records = read_records(tmp_path / "records.jsonl")
    start = {x["id"]: x["t"] for x in records if x["event"] == "start"}
    end = {x["id"]: x["t"] for x in records if x["event"] == "handled"}
    assert sorted(ids, key=start.__getitem__) == ids, "started out of queue order"
    for before, after in itertools.pairwise(ids):
        assert start[after] >= end[before], f"{after} started while {before} ran"


def test_sigterm_while_its_own_thread_hangs_exits_within_the_stop_timeout(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """SIGTERM while the worker's own thread (taken over) hangs in a handler: it waits
    BUS_STOP_TIMEOUT_S for it, then exits 0, though that thread never returns; the message goes
    back with attempt + 1, as after a crash."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 BUS_STOP_TIMEOUT_S="1", BUS_HANDLER_TIMEOUT_S="60")  # fmt: skip
    started(proc, r)
    warm_up(r)
    hung = ledger.push(stuck="sleep")
    wait_for(lambda: "another took over" in proc.log(), 5, "the loop taken over")
    proc.signal(signal.SIGTERM)
    assert proc.wait(6) == 0, proc.log()[-2000:]
    assert ran_in_the_workers_thread(threads(tmp_path, hung)[0]), threads(tmp_path, hung)
    (back,) = [decode(raw) for raw in r.lrange(PENDING, 0, -1)]
    assert (back.id, back.attempt) == (hung, 2)
    assert not r.keys(PROCESSING_GLOB)


def test_at_most_once_a_hang_in_its_own_thread_is_dead_lettered_at_its_limit(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """At-most-once, measured fast, a handler hangs in the worker's own thread: dead-lettered at
    its first limit (never delivered twice), the others handled once."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK, *AT_MOST_ONCE,
                 **LIMIT)  # fmt: skip
    started(proc, r)
    warm_up(r)
    hung = ledger.push(stuck="sleep")
    wait_for(lambda: count(tmp_path, "start")[hung] == 1, 5, "the hung one started")
    good = [ledger.push() for _ in range(10)]
    wait_for(lambda: settled(r, 1), 20, "the hung message dead and the rest handled")
    assert ran_in_the_workers_thread(threads(tmp_path, hung)[0]), threads(tmp_path, hung)
    assert count(tmp_path, "start")[hung] == 1
    assert count(tmp_path, "handled") == Counter(good)
    assert "timed out" in dead(r)[hung]["reason"]


@pytest.mark.parametrize("how", ["systemexit", "base"])
def test_a_base_exception_in_its_own_thread_ends_its_message_then_its_process(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, how: str
) -> None:
    """SystemExit or a bare BaseException from a handler run in the worker's own thread: the
    message is settled as a failed attempt (back with attempt 2), the process exits 70."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON)
    started(proc, r)
    warm_up(r)
    bad = ledger.push(poison=how)
    assert proc.wait(10) == 70, proc.log()[-2000:]
    assert ran_in_the_workers_thread(threads(tmp_path, bad)[0]), threads(tmp_path, bad)
    (back,) = [decode(raw) for raw in r.lrange(PENDING, 0, -1)]
    assert (back.id, back.attempt) == (bad, 2)
    assert not r.keys(PROCESSING_GLOB)


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_broken_links_during_a_fast_drain_strand_nothing(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], delivery: str
) -> None:
    """Measured fast, 30,000 quick messages with a garbage one every 20th (so most rounds in the
    worker's own thread start with a settle: that dead letter), and the worker's connection
    killed every 20 ms for 0.4 s: it reconnects each time, and what it had queued to run is run,
    not stranded. At-least-once the accounting is exact: each handled once (a lost reply is
    settled again with its token, what it claimed given back), each garbage one dead."""
    r = fresh_redis.client()
    mode = AT_MOST_ONCE if delivery == "at-most-once" else ()
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON, *mode)
    started(proc, r)
    warm_up(r)
    n, garbage_every = 30_000, 20
    r.lpush(PENDING, *[b"not an envelope" if i % garbage_every == garbage_every - 1
                       else new({"quick": True}, src="q", seq=i + 1).encode()
                       for i in range(n)])  # fmt: skip
    killed = 0
    for _ in range(20):
        time.sleep(0.02)
        killed += kill_links(r, "bus:worker:w")
    assert killed >= 5
    wait_for(lambda: r.llen(PENDING) == 0 and not r.keys(PROCESSING_GLOB), 20,
             "the backlog drained after the link breaks")  # fmt: skip
    if delivery == "at-least-once":
        good = n - n // garbage_every
        wait_for(lambda: stat(r, "w", "handled") == WARM + good, 10, "each handled once")
        assert r.llen(DEAD) == n // garbage_every
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.log()[-2000:]
    assert r.llen(PENDING) == 0, f"{r.llen(PENDING)} held by the idle worker, given back at exit"
    assert stat(r, "w", "reconnects") >= 1


def kill_links(r: redis.Redis, name: str) -> int:
    """CLIENT KILL every connection named ``name``; how many."""
    killed = 0
    for client in r.client_list():
        if client.get("name") == name:
            try:
                r.execute_command("CLIENT", "KILL", "ID", client["id"])
                killed += 1
            except redis.ResponseError:  # gone already
                pass
    return killed
