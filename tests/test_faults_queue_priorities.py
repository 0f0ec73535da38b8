"""Priority levels when a worker dies: kill -9 of a worker holding a claim of mixed levels, then
the same worker started again. Every accepted message is handled once (none had finished),
each at the level it was pushed at, and the backlog after the recovery in strict level order:
at each level, first the ones the dead worker had claimed (given back to the front of their own
level's line, in claim order, with attempt 2: its handlers may have seen them), then the others
in push order.

Real processes as in :mod:`tests.test_faults_queue_workers`; every message accounted for by id
(:mod:`tests.ledger`)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import decode, keys
from tests.ledger import Ledger, account, assert_at_least_once, resume_after
from tests.procs import Proc, read_records
from tests.queuekit import HEARTBEAT_TTL_S, Q, report, wait_drained

pytestmark = pytest.mark.slow
LEVELS = (0, 3, 6, 9)
HOLD = "tests.handlers_for_tests:hold"
START_BOUND_S = HEARTBEAT_TTL_S + 2.0  # the dead one's lease expires, then a start and a claim


def test_kill_9_with_a_claim_of_mixed_levels_then_restart(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    r = fresh_redis.client()
    path, release = tmp_path / "records.jsonl", tmp_path / "release"
    ledger = Ledger(fresh_redis)
    # 3 of level 9, 3 of 6, 18 of 3, 36 of 0, interleaved: the 9 claimed span three levels
    levels = [9 if i % 20 == 0 else 6 if i % 20 == 1 else 3 if i % 20 < 8 else 0 for i in range(60)]
    pushed = [(ledger.push(priority=level), level) for level in levels]
    env = {"BUS_BATCH_SIZE": "10", "TEST_BUS_RELEASE": str(release)}
    first = spawn("worker", fresh_redis.url, "--name", "w1", "--handler", HOLD,
                  "--concurrency", "8", **env)  # fmt: skip
    wait_for(lambda: len(read_records(path)) >= 8, 10, "8 handlers holding their message")
    first.signal(signal.SIGKILL)
    first.wait(5)
    # what it had claimed, oldest first: 8 in its handlers, one more claimed ahead
    held = [decode(x).id for x in reversed(r.lrange(keys.processing(Q, "w1"), 0, -1))]
    claimed = len(held)
    assert {x["id"] for x in read_records(path)} <= set(held) and claimed >= 8
    level_of = dict(pushed)
    assert [level_of[m] for m in held[:8]] == [9, 9, 9, 6, 6, 6, 3, 3]
    release.touch()
    restarted = time.monotonic()
    spawn("worker", fresh_redis.url, "--name", "w1", "--handler", HOLD, "--concurrency", "1",
          **env)  # fmt: skip
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, restarted)  # a process start, its recovery, a claim
    report("priorities: kill -9 holding 8 of mixed levels, restart", ledger, acc, recovery,
           START_BOUND_S, claimed_when_killed=claimed)  # fmt: skip
    assert recovery <= START_BOUND_S
    assert_at_least_once(acc, 0, "none of the held messages had finished")
    handled = [x for x in records if x["event"] == "handled"]
    assert all(x["priority"] == level_of[x["id"]] for x in handled), "a level changed"
    assert all(x["attempt"] == (2 if x["id"] in held else 1) for x in handled)
    order = [x["id"] for x in handled]
    expected = [mid for level in sorted(LEVELS, reverse=True)
                for mid in [m for m in held if level_of[m] == level]
                + [m for m, p in pushed if p == level and m not in held]]  # fmt: skip
    show = {m: f"{level_of[m]}{'*' if m in held else ''}" for m in level_of}
    assert order == expected, ([show[m] for m in order], [show[m] for m in expected])
