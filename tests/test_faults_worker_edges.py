"""The worker's edges, where a hostile producer, a frozen host or a lost reply meet the worker,
the reaper and the balance of a queue: identical envelopes retried with a backoff or settled
again after a lost reply, a worker that lost its name, a link cut before the handler runs, an
at-most-once count Redis refuses, a change of delivery under the same name, a crash with one
attempt allowed; and, under load, Redis restarts, a paused worker and kill -9 with the balance
sampled every 5 ms (:class:`BalanceWatch`). Real redis-server and worker processes; a small
proxy (:class:`ScriptFaultProxy`) cuts the link on, or drops the reply of, one chosen script.

With at-least-once workers the balance holds at every instant; an at-most-once blocking pop is
counted one round trip after it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, keys, make_client
from producer.store import scripts
from producer.store.counts import read_balance
from tests.conftest import quick_settings
from tests.ledger import Ledger, account, assert_at_least_once
from tests.procs import Proc, read_records
from tests.proxies import proxy
from tests.queuekit import (
    AT_MOST_ONCE,
    CONSUMERS,
    DEAD,
    HEARTBEAT_TTL_S,
    PENDING,
    PROCESSING_GLOB,
    RECORD,
    SLOW,
    BalanceWatch,
    wait_blocked,
)

pytestmark = pytest.mark.slow

Q = "default"
DELAYED = keys.delayed(Q)
POISON = "tests.handlers_for_tests:poison"
FAIL = "tests.handlers_for_tests:fail_always"
FAST_REAPER = {"BUS_REAPER_INTERVAL_S": "0.5"}


# --- helpers ------------------------------------------------------------------------------


def push_counted(r: redis.Redis, *raws: bytes) -> None:
    """A foreign producer's push, counted as the README says: MULTI, LPUSH, HINCRBY, EXEC."""
    with r.pipeline(transaction=True) as pipe:
        pipe.lpush(PENDING, *raws)
        pipe.hincrby(keys.counts(Q), "pushed", len(raws))
        pipe.execute()


def push_poisoned(ledger: Ledger, how: str | None) -> str:
    """A numbered message for tests.handlers_for_tests:poison, misbehaving ``how`` (or not)."""
    return ledger.push(poison=how) if how else ledger.push()


def drained(r: redis.Redis) -> bool:
    """Nothing pending, delayed or in any processing list."""
    in_flight = any(r.llen(k) for k in r.scan_iter(match=PROCESSING_GLOB))
    return not r.llen(PENDING) and not r.zcard(DELAYED) and not in_flight


def events(path: Path, event: str, key: Callable[[dict[str, Any]], Any] = lambda x: x["id"]
           ) -> Counter[Any]:  # fmt: skip
    return Counter(key(x) for x in read_records(path) if x["event"] == event)


def dead_entries(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(e) for e in r.lrange(DEAD, 0, -1)]


def dead_ids(r: redis.Redis) -> list[str]:
    return [json.loads(e["raw"])["id"] for e in dead_entries(r)]


def same_attempt_twice(path: Path) -> dict[tuple[str, int], int]:
    """(id, attempt) pairs handled more than once: a delivery no attempt was counted for."""
    pairs = events(path, "handled", lambda x: (x["id"], x["attempt"]))
    return {k: n for k, n in pairs.items() if n > 1}


# --- breaks (expected to FAIL) ------------------------------------------------------------


def test_identical_envelopes_retried_with_a_backoff_are_separate_messages(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The same envelope pushed three times, a handler that always fails, retries after a
    backoff (through ``bus:{q}:delayed``, a sorted set that holds equal bytes once): each copy
    is attempted 3 times and dead-lettered, the balance 0. A retry whose bytes are already
    delayed is retried at once instead."""
    r = fresh_redis.client()
    raw = json.dumps({"v": 1, "id": "same-bytes", "payload": {"n": 1}}).encode()
    push_counted(r, raw, raw, raw)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", FAIL, BUS_MAX_ATTEMPTS="3",
          BUS_RETRY_BACKOFF_S="0.05", BUS_RETRY_BACKOFF_CAP_S="0.2",
          BUS_MOVER_INTERVAL_S="0.05")  # fmt: skip
    wait_for(lambda: r.llen(DEAD) and drained(r), 15, "dead letters and nothing left")
    time.sleep(1.0)  # anything still coming would come now
    attempts = events(tmp_path / "records.jsonl", "attempt", lambda x: x["attempt"])
    balance = read_balance(r, Q)
    assert (attempts, r.llen(DEAD), balance["unaccounted"]) == (
        Counter({1: 3, 2: 3, 3: 3}), 3, 0), balance  # fmt: skip


def test_a_settle_replayed_after_a_lost_reply_does_not_ack_an_identical_envelope(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The same envelope pushed twice: copy 1 in the handler of an idle worker, copy 2 arrives;
    the script that acks copy 1 also claims copy 2, and its reply is lost. Settling again after
    the reconnect must not take copy 2 for copy 1 (the settle's token says it ran): both
    copies are handled."""
    r = fresh_redis.client()
    r.script_load(scripts.SETTLE_CLAIM.script)  # so the reply the proxy drops is the script's own
    raw = json.dumps({"v": 1, "id": "same-bytes", "payload": {"sleep_s": 0.5}}).encode()
    path = tmp_path / "records.jsonl"
    with proxy(fresh_redis, scripts.SETTLE_CLAIM.script, "drop-reply") as px:
        spawn("worker", px.url, "--name", "w", "--handler", SLOW)
        wait_blocked(r, "w")
        push_counted(r, raw)
        wait_for(lambda: events(path, "start"), 5, "copy 1 in the handler")
        push_counted(r, raw)
        wait_for(px.fired.is_set, 5, "the settle whose reply is lost")
        wait_for(lambda: drained(r), 10, "nothing left")
        time.sleep(1.5)
    handled = events(path, "handled")
    assert handled == Counter({"same-bytes": 2}), (
        f"{handled['same-bytes']} of 2 copies handled; balance {read_balance(r, Q)}"
    )


def test_a_worker_that_lost_its_name_leaves_its_successors_messages_alone(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Worker ``w`` frozen (SIGSTOP) past its lease; a second ``w`` takes the name and the
    batch. Resumed, the first sees its name taken and exits 75 touching nothing: not the
    processing list nor the registry entry, which are the successor's. No message is handled
    twice at the same attempt."""
    r = fresh_redis.client()
    Ledger(fresh_redis).push_many(6, sleep_s=1.5)
    path = tmp_path / "records.jsonl"
    first = spawn("worker", fresh_redis.url, "--name", "w", "--handler", SLOW,
                  BUS_BATCH_SIZE="3")  # fmt: skip
    wait_for(lambda: events(path, "start"), 10, "the first w's handler")
    first.signal(signal.SIGSTOP)
    try:
        time.sleep(HEARTBEAT_TTL_S + 1)  # its lease lapses
        second = spawn("worker", fresh_redis.url, "--name", "w", "--handler", SLOW,
                       BUS_BATCH_SIZE="3")  # fmt: skip
        wait_for(lambda: any(x["pid"] == second.pid for x in read_records(path)), 15,
                 "the second w's handler")  # fmt: skip
    finally:
        first.signal(signal.SIGCONT)
    assert first.wait(20) == 75, first.log()[-2000:]
    wait_for(lambda: drained(r), 30, "nothing left")
    time.sleep(1.0)
    assert "requeued" not in first.log(), first.log()[-1500:]
    assert same_attempt_twice(path) == {}


def test_a_link_cut_before_the_handler_runs_counts_no_attempt(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The link breaks on the in-flight record's write of a tracked message an idle worker
    popped, before its handler runs: after the reconnect it goes back unchanged (no attempt
    counted) and is handled once, as attempt 1, even with BUS_MAX_ATTEMPTS=1."""
    r = fresh_redis.client()
    with proxy(fresh_redis, scripts.RECORD.script, "cut") as px:
        spawn("worker", px.url, "--name", "w", "--handler", RECORD, BUS_MAX_ATTEMPTS="1")
        wait_blocked(r, "w")
        producer = Producer(make_client(quick_settings(fresh_redis.url), "producer"))
        sent = producer.push({"n": 1}, track=True)
        wait_for(px.fired.is_set, 5, "the in-flight record's write, cut")
        wait_for(lambda: drained(r), 10, "nothing left")
        time.sleep(1.0)
    handled = events(tmp_path / "records.jsonl", "handled", lambda x: (x["id"], x["attempt"]))
    assert handled == Counter({(sent.envelope.id, 1): 1}), [e["reason"] for e in dead_entries(r)]


def test_at_most_once_a_refused_count_does_not_lose_the_popped_message(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """At-most-once, Redis out of memory while due delayed messages arrive: the count of a
    blocking pop runs out of memory (allow-oom), and a count refused anyway is made with the
    next one; the popped message is handled either way, never dropped."""
    r = fresh_redis.client()
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", RECORD, *AT_MOST_ONCE)
    wait_blocked(r, "w")
    producer = Producer(make_client(quick_settings(fresh_redis.url), "producer"))
    sent = producer.push_many([{"n": i} for i in range(3)], delay_s=1.0)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        wait_for(lambda: not r.zcard(DELAYED) and not r.llen(PENDING), 10, "the due ones popped")
        time.sleep(0.5)
    finally:
        r.config_set("maxmemory", 0)
    time.sleep(2.0)
    handled = events(tmp_path / "records.jsonl", "handled")
    lost = {s.envelope.id for s in sent} - set(handled)
    assert not lost, f"lost {len(lost)} by a live worker; balance {read_balance(r, Q)}"


def test_a_restart_under_the_same_name_in_at_most_once_takes_the_messages_back(
    fresh_redis: RedisServer, spawn: Callable[..., Proc]
) -> None:
    """An at-least-once ``w`` killed holding 10 messages, restarted as ``--delivery
    at-most-once``: its first run takes back what its name left, as any restart does."""
    r = fresh_redis.client()
    Ledger(fresh_redis).push_many(10, sleep_s=0.5)
    old = spawn("worker", fresh_redis.url, "--name", "w", "--handler", SLOW, "--concurrency", "10")
    wait_for(lambda: r.llen(keys.processing(Q, "w")) == 10, 10, "the batch claimed")
    old.signal(signal.SIGKILL)
    old.wait(5)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", SLOW, *AT_MOST_ONCE)
    spawn("worker", fresh_redis.url, "--name", "other", "--handler", SLOW, **FAST_REAPER)
    time.sleep(HEARTBEAT_TTL_S + 5)  # lease wait, TTL, several reaper passes
    stranded = r.llen(keys.processing(Q, "w"))
    assert stranded == 0, f"{stranded} stranded; balance {read_balance(r, Q)}"


@pytest.mark.parametrize("max_attempts", [1, 2], ids=lambda n: f"max_attempts={n}")
def test_one_crash_dead_letters_only_the_poison_message(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, max_attempts: int
) -> None:
    """A batch of 100, ``os._exit(1)`` on the 50th; the worker restarted each time. Which
    message of a batch killed its worker is not known, so the batch goes back with attempt + 1
    (with BUS_MAX_ATTEMPTS=1 too: one more delivery, one by one), and a message that kills its
    worker when claimed alone is dead-lettered. Only the poison one is dead, and it was
    started; the 99 others are handled."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ids = [push_poisoned(ledger, "exit" if i == 49 else None) for i in range(100)]
    env = {"BUS_MAX_ATTEMPTS": str(max_attempts), "BUS_BATCH_SIZE": "100"}
    for _ in range(max_attempts + 2):
        proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON, **env)

        def ended(proc: Proc = proc) -> bool:
            return proc.proc.poll() is not None or (drained(r) and r.llen(DEAD) > 0)

        wait_for(ended, 30, "a crash, or everything settled")
        if proc.proc.poll() is None:
            break
    path = tmp_path / "records.jsonl"
    started, handled = events(path, "start"), events(path, "handled")
    dead = dead_ids(r)
    never_ran = [i for i in dead if i not in started]
    assert never_ran == [], f"{len(never_ran)} of {len(dead)} dead letters never reached a handler"
    assert dead == [ids[49]]
    assert set(handled) == set(ids) - {ids[49]}


# --- under load, the balance at every instant ---------------------------------------


def test_the_balance_holds_at_every_instant_through_redis_restarts_under_load(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Two at-least-once workers (batches of 50), a producer pushing all along, Redis (AOF,
    appendfsync always) restarted four times, twice with SIGTERM and twice with SIGKILL:
    nothing lost, nothing handled twice, and the balance exactly 0 in every sample."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    for name in ("a", "b"):
        spawn("worker", fresh_redis.url, "--name", name, "--handler", RECORD, BUS_BATCH_SIZE="50")
        wait_blocked(r, name)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            ledger.try_push(ledger.payload())
            time.sleep(0.001)

    with BalanceWatch(fresh_redis) as watch:
        pusher = threading.Thread(target=produce, name="pusher")
        pusher.start()
        try:
            for i in range(4):
                time.sleep(1.5)
                if i % 2:
                    fresh_redis.kill()
                    fresh_redis.start()
                else:
                    fresh_redis.restart()
            time.sleep(1.0)
        finally:
            stop.set()
            pusher.join(10)
        ledger.retry_refused()
        r = fresh_redis.client()
        wait_for(lambda: drained(r), 30, "nothing left")
        time.sleep(1.0)
    acc = account(read_records(tmp_path / "records.jsonl"), ledger)
    assert len(ledger.accepted) > 1000
    assert_at_least_once(acc, 0, "Redis restarts with appendfsync always")
    assert watch.samples > 100 and watch.off == [], watch.off[:3]
    assert read_balance(r, Q)["unaccounted"] == 0


def test_a_worker_paused_past_its_ttl_then_resumed_keeps_the_balance(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Worker ``a`` is SIGSTOPped with a batch of 20 in hand, past its heartbeat TTL; ``b``'s
    reaper requeues the batch (attempt 2) and unregisters ``a``; then ``a`` is SIGCONTed. It
    finishes its stale batch (the duplicates the README allows: at most what it had claimed),
    its settle moves nothing (the messages left its list), it registers again and goes on.
    Nothing lost, no delivery without its attempt counted, balance 0 in every sample."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ledger.push_many(40, sleep_s=0.1)
    path = tmp_path / "records.jsonl"
    env = {"BUS_BATCH_SIZE": "20", **FAST_REAPER}
    with BalanceWatch(fresh_redis) as watch:
        a = spawn("worker", fresh_redis.url, "--name", "a", "--handler", SLOW, **env)
        wait_for(lambda: events(path, "start"), 10, "a's handler")
        time.sleep(0.15)
        a.signal(signal.SIGSTOP)
        try:
            spawn("worker", fresh_redis.url, "--name", "b", "--handler", SLOW, **env)
            wait_for(lambda: not r.exists(keys.processing(Q, "a")), 15, "a's list reaped")
        finally:
            a.signal(signal.SIGCONT)
        wait_for(lambda: r.zscore(CONSUMERS, "a"), 5, "a registered again")
        wait_for(lambda: drained(r), 30, "nothing left")
        time.sleep(1.0)
    acc = account(read_records(path), ledger)
    assert_at_least_once(acc, 20, "the paused worker's batch")
    assert same_attempt_twice(path) == {}
    assert watch.off == [], str(watch.off[:3])
    assert a.proc.poll() is None, a.log()[-1500:]


def test_kill_9_and_restart_under_the_same_name_keep_the_balance_at_every_instant(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A producer pushing all along; worker ``a`` killed with SIGKILL mid-batch four times and
    restarted under the same name, sometimes at once (it waits for its lease and takes its
    list back), sometimes after ``b``'s reaper took the list. Nothing lost, duplicates only
    among what ``a`` had claimed, never the same attempt twice, balance 0 in every sample."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    path = tmp_path / "records.jsonl"
    env = {"BUS_BATCH_SIZE": "50", **FAST_REAPER}

    def start_a() -> Proc:
        return spawn("worker", fresh_redis.url, "--name", "a", "--handler", SLOW, **env)

    a = start_a()
    spawn("worker", fresh_redis.url, "--name", "b", "--handler", SLOW, **env)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            ledger.try_push(ledger.payload(sleep_s=0.002))
            time.sleep(0.001)

    with BalanceWatch(fresh_redis) as watch:
        pusher = threading.Thread(target=produce, name="pusher")
        pusher.start()
        try:
            for i in range(4):
                time.sleep(1.0)
                a.signal(signal.SIGKILL)
                a.wait(5)
                time.sleep(0.3 if i % 2 else HEARTBEAT_TTL_S + 1)
                a = start_a()
            time.sleep(1.0)
        finally:
            stop.set()
            pusher.join(10)
        wait_for(lambda: drained(r), 60, "nothing left")
        time.sleep(1.0)
    acc = account(read_records(path), ledger)
    assert_at_least_once(acc, 4 * 50, "four kills of a worker holding at most 50")
    assert same_attempt_twice(path) == {}
    assert watch.off == [], watch.off[:3]
    assert read_balance(r, Q)["unaccounted"] == 0


def test_identical_envelopes_retried_at_once_are_each_attempted_max_attempts_times(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The same envelope bytes pushed 3 times, a handler that always fails, no backoff:
    3 x 3 attempts, 3 dead letters, balance 0 (retries at once go back onto the list, which
    keeps duplicates; compare the backoff test above)."""
    r = fresh_redis.client()
    raw = json.dumps({"v": 1, "id": "same-bytes", "payload": {"n": 1}}).encode()
    push_counted(r, raw, raw, raw)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", FAIL, BUS_MAX_ATTEMPTS="3")
    wait_for(lambda: r.llen(DEAD) == 3 and drained(r), 15, "three dead letters")
    time.sleep(1.0)
    attempts = events(tmp_path / "records.jsonl", "attempt", lambda x: x["attempt"])
    assert attempts == Counter({1: 3, 2: 3, 3: 3})
    assert read_balance(r, Q)["unaccounted"] == 0


def test_at_most_once_batch_of_one_handler_system_exit_keeps_the_balance(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """At-most-once, one slot, BUS_BATCH_SIZE=1 (the blocking pop and its separate count): the
    3rd of 6 messages raises SystemExit. The process exits 70 with that message dead-lettered once
    and the rest pending; restarted, it handles the rest once each. Balance 0 throughout
    the steps (taken counts the popped ones, the dead letter is not counted twice)."""
    r = fresh_redis.client()
    ledger = Ledger(fresh_redis)
    ids = [push_poisoned(ledger, "systemexit" if i == 2 else None) for i in range(6)]
    env = {"BUS_BATCH_SIZE": "1", "BUS_CONCURRENCY": "1"}
    first = spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON, *AT_MOST_ONCE,
                  **env)  # fmt: skip
    assert first.wait(20) == 70, first.log()[-2000:]
    balance = read_balance(r, Q)
    assert (balance["taken"], balance["pending"], balance["unaccounted"]) == (3, 3, 0), balance
    assert dead_ids(r) == [ids[2]]
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON, *AT_MOST_ONCE, **env)
    wait_for(lambda: drained(r), 10, "nothing left")
    time.sleep(0.5)
    handled = events(tmp_path / "records.jsonl", "handled")
    assert handled == Counter({i: 1 for i in ids if i != ids[2]})
    balance = read_balance(r, Q)
    assert (balance["taken"], balance["pending"], balance["unaccounted"]) == (6, 0, 0), balance
