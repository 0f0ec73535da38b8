"""List mode, at-least-once, when the link to Redis breaks: an idle timeout, CLIENT KILL while
the worker waits or works, a Redis restart.

Real processes: a redis-server of each test's own (AOF on, ``appendfsync always``) and workers
as ``python -m consumers worker``. Each test pushes K >= 100 numbered messages with the fault in
the middle, drains the queue and accounts for every message by id (:mod:`tests.ledger`): every
accepted message handled, duplicates only of what was in flight, the resume time within its
bound (:mod:`tests.queuekit`), the dead list empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from tests.ledger import Ledger, account, assert_at_least_once, handled_ids, resume_after
from tests.procs import Proc, read_records
from tests.queuekit import (
    BATCH_SIZE,
    DEAD,
    RECONNECT_BOUND_S,
    SLOW,
    Q,
    producer_conns,
    report,
    start_workers,
    wait_blocked,
    wait_drained,
    wait_started,
    worker_stat,
)

pytestmark = pytest.mark.slow


def test_idle_timeout_closes_idle_connections_and_nothing_breaks(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CONFIG SET timeout 1 and three bursts 3 s apart: the producer's pooled connection is closed
    while idle; every message is handled exactly once and the worker never has to reconnect."""
    r = fresh_redis.client()
    r.config_set("timeout", 1)
    path = tmp_path / "records.jsonl"
    start_workers(spawn, r, fresh_redis.url, "w1")
    ledger = Ledger(fresh_redis)
    recoveries: list[float] = []
    closed = 0
    for burst in range(3):
        if burst:
            idle_conns = producer_conns(r)
            time.sleep(3.0)  # idle: Redis closes every connection idle for more than 1 s
            assert idle_conns and not idle_conns & producer_conns(r), "idle timeout closed nothing"
            closed += len(idle_conns)
            gap_end = time.monotonic()
        ledger.push_many(40)
        if burst:
            wait_for(lambda: set(ledger.accepted) <= handled_ids(read_records(path)), 10,
                     "burst handled", every_s=0.02)  # fmt: skip
            recoveries.append(resume_after(read_records(path), gap_end))
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    report("idle timeout", ledger, acc, max(recoveries), RECONNECT_BOUND_S,
           producer_connections_closed_by_server=closed)  # fmt: skip
    assert_at_least_once(acc, 0, "no fault reaches a message: zero duplicates")
    assert not acc.late and not ledger.raised, "a push failed on a connection closed while idle"
    assert max(recoveries) <= RECONNECT_BOUND_S, f"resume {recoveries} > {RECONNECT_BOUND_S}s"
    assert worker_stat(r, "w1", "reconnects") == 0
    assert r.llen(DEAD) == 0


def test_client_kill_while_blocked(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLIENT KILL TYPE normal while the worker waits in BLMOVE: it reconnects, nothing is
    lost, nothing duplicated (nothing was in hand)."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    start_workers(spawn, r, fresh_redis.url, "w1")
    ledger = Ledger(fresh_redis)
    ledger.push_many(60)
    wait_drained(r, path, ledger)
    before = wait_blocked(r, "w1")
    assert before["cmd"] == "blmove", before
    killed = r.client_kill_filter(_type="normal")  # every client but this one
    t_kill = time.monotonic()
    assert killed >= 2, f"killed {killed}: expected the worker's and its admin connection"
    ledger.push_many(60)
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, t_kill)
    after = wait_blocked(r, "w1")
    report("CLIENT KILL while blocked", ledger, acc, recovery, RECONNECT_BOUND_S,
           killed_clients=killed, reconnects=worker_stat(r, "w1", "reconnects"))  # fmt: skip
    assert_at_least_once(acc, 0, "killed while blocked: nothing was in hand")
    assert recovery <= RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {RECONNECT_BOUND_S}s"
    assert after["id"] != before["id"], "the worker's connection was not replaced"
    assert worker_stat(r, "w1", "reconnects") == 1
    assert r.llen(DEAD) == 0


def test_client_kill_while_handling(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLIENT KILL TYPE normal during a 1 s handler: the message in hand is handled at most once
    more, everything else exactly once; the worker's other slots resume within the reconnect
    bound of the kill, while that handler still runs."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    start_workers(spawn, r, fresh_redis.url, "w1", handler=SLOW)
    ledger = Ledger(fresh_redis)
    ledger.push_many(50)
    wait_drained(r, path, ledger)
    before = wait_blocked(r, "w1")
    in_hand = ledger.push(sleep_s=1)
    wait_started(path, in_hand)
    in_flight = int(r.llen(keys.processing(Q, "w1")))
    killed_at = time.monotonic()
    killed = r.client_kill_filter(_type="normal")
    assert killed >= 2, f"killed {killed}: expected the worker's and its admin connection"
    ledger.push_many(50)
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, killed_at)
    after = wait_blocked(r, "w1")
    report("CLIENT KILL while handling", ledger, acc, recovery, RECONNECT_BOUND_S,
           in_flight=in_flight, reconnects=worker_stat(r, "w1", "reconnects"),
           in_hand_handled=acc.handled[in_hand])  # fmt: skip
    assert in_flight == 1
    assert_at_least_once(acc, in_flight, "only the message in hand may be handled again")
    assert set(acc.duplicates) <= {in_hand}, acc.duplicates
    assert recovery <= RECONNECT_BOUND_S, (
        f"resume {recovery:.2f}s after the kill > {RECONNECT_BOUND_S}s"
    )
    assert after["id"] != before["id"], "the worker's connection was not replaced"
    assert r.llen(DEAD) == 0


def test_redis_restart_with_aof_loses_nothing(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Redis restarted (SIGTERM, same port, same AOF) while a producer pushes every 5 ms: every
    accepted message is handled; a duplicate only for a message in flight at the restart."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    start_workers(spawn, r, fresh_redis.url, "w1")
    ledger = Ledger(fresh_redis)
    restarted: dict[str, float] = {}

    def restart() -> None:
        restarted["down"] = time.monotonic()
        fresh_redis.restart()
        restarted["up"] = time.monotonic()

    restarter = threading.Thread(target=restart, daemon=True)
    after_restart = 0
    while after_restart < 60:
        ledger.try_push(ledger.payload())
        time.sleep(0.005)
        if ledger.n == 80:
            restarter.start()
        if ledger.n > 80 and not restarter.is_alive():
            after_restart += 1
    restarter.join(15)
    retried = ledger.retry_refused()
    r = fresh_redis.client()
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, restarted["up"])
    redelivered = {x["id"] for x in records if x["event"] == "handled" and x["attempt"] > 1}
    report("Redis restart (AOF)", ledger, acc, recovery, RECONNECT_BOUND_S,
           downtime_s=round(restarted["up"] - restarted["down"], 3), retried_pushes=retried,
           reconnects=worker_stat(r, "w1", "reconnects"))  # fmt: skip
    assert_at_least_once(acc, BATCH_SIZE, "at most the batch in flight at the restart")
    assert set(acc.duplicates) <= redelivered, "a duplicate that did not come back via recovery"
    assert recovery <= RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {RECONNECT_BOUND_S}s"
    assert worker_stat(r, "w1", "reconnects") >= 1
    assert len(ledger.accepted) >= 140
    assert r.llen(DEAD) == 0
