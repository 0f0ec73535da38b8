"""List mode, at-most-once (BRPOP, BUS_BATCH_SIZE=1): a fault loses at most the one message in
hand, counted exactly (lost = accepted - handled, :mod:`tests.ledger`), and never delivers one
twice. The black hole with a ghost pop is in :mod:`tests.test_faults_queue_black_hole`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from tests.ledger import Ledger, account, assert_at_most_once, resume_after
from tests.procs import Proc
from tests.queuekit import (
    AT_MOST_ONCE,
    DEAD,
    NO_RECONNECT_BOUND_S,
    RECONNECT_BOUND_S,
    SLOW,
    processing_lists,
    report,
    start_workers,
    wait_blocked,
    wait_drained,
    wait_started,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fault", ["kill -9 mid-message", "CLIENT KILL while blocked"])
def test_at_most_once_loses_at_most_the_message_in_hand(
    fault: str, fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """--delivery at-most-once, BUS_BATCH_SIZE=1: kill -9 during a 2 s handler loses exactly that
    message (a second worker handles the rest); CLIENT KILL while blocked in BRPOP loses none.
    Never a duplicate."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    names = ("w1", "w2") if fault.startswith("kill") else ("w1",)
    workers = start_workers(spawn, r, fresh_redis.url, *names, handler=SLOW, args=AT_MOST_ONCE,
                            BUS_BATCH_SIZE="1")  # fmt: skip
    ledger = Ledger(fresh_redis)
    ledger.push_many(50)
    wait_drained(r, path, ledger, len(names))
    if fault.startswith("kill"):
        in_hand = ledger.push(sleep_s=2)
        start = wait_started(path, in_hand)
        victim = next(n for n, p in workers.items() if p.pid == start["pid"])
        workers[victim].signal(signal.SIGKILL)
        fault_end = time.monotonic()
        workers[victim].wait(5)
        expected_lost, bound = {in_hand}, NO_RECONNECT_BOUND_S  # the survivor is in BRPOP
    else:
        assert wait_blocked(r, "w1")["cmd"] == "brpop"
        assert r.client_kill_filter(_type="normal") >= 2
        fault_end = time.monotonic()
        expected_lost, bound = set(), RECONNECT_BOUND_S  # a killed BRPOP pops nothing
    ledger.push_many(50)
    records = wait_drained(r, path, ledger, 1, lost=expected_lost)
    acc = account(records, ledger)
    recovery = resume_after(records, fault_end)
    report(f"at-most-once, {fault}", ledger, acc, recovery, bound,
           lost_as_expected=acc.lost == expected_lost)  # fmt: skip
    assert_at_most_once(acc, ledger, expected_lost)
    assert recovery <= bound, f"resume {recovery:.2f}s > {bound}s"
    assert processing_lists(r) == {}, "at-most-once uses no processing list"
    assert r.llen(DEAD) == 0
