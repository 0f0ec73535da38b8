"""List mode when Redis becomes a black hole: SIGSTOPped for 4 s (longer than the block timeout
plus the read deadline) with a ghost pop, a pop Redis serves on SIGCONT to a connection the
worker already dropped (:mod:`tests.blackhole`), in both delivery modes.

At-least-once, the ghost comes back and nothing is lost; at-most-once, the ghost is the one
loss. Accounting by message id as in :mod:`tests.ledger`; resume times from SIGCONT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from producer import keys
from tests.blackhole import settle_then_black_hole, stoppable_server
from tests.ledger import (
    Ledger,
    account,
    assert_at_least_once,
    assert_at_most_once,
    resume_after,
)
from tests.procs import Proc
from tests.queuekit import (
    AT_MOST_ONCE,
    DEAD,
    RECONNECT_BOUND_S,
    SLOW,
    Q,
    processing_lists,
    report,
    start_workers,
    wait_drained,
    worker_stat,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def stoppable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """``fresh_redis`` that also takes DEBUG from loopback (see tests.blackhole)."""
    yield from stoppable_server(tmp_path)


def test_black_hole_and_ghost_pop(
    stoppable_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """SIGSTOP Redis for 4 s (> block timeout + read deadline) while the worker is blocked in
    BLMOVE: the worker's read deadline fires, it reconnects after SIGCONT. The ghost pop (the
    stale BLMOVE served on SIGCONT to the connection the worker dropped) lands in the worker's
    processing list and is given back by the worker unchanged (attempt 1: it never reached a
    handler); a message pushed during the stop is handled too; nothing is lost and the
    processing list ends empty."""
    server = stoppable_redis
    r = server.client()
    path = tmp_path / "records.jsonl"
    start_workers(spawn, r, server.url, "w1")
    ledger = Ledger(server)
    ghost_id, queued_id, resumed = settle_then_black_hole(server, r, path, ledger, 60)
    ledger.push_many(60)
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, resumed)
    ghost_attempts = [x["attempt"] for x in records if x["id"] == ghost_id]
    queued_attempts = [x["attempt"] for x in records if x["id"] == queued_id]
    report("black hole 4 s + ghost pop", ledger, acc, recovery, RECONNECT_BOUND_S,
           ghost_attempts=ghost_attempts, queued_attempts=queued_attempts,
           reconnects=worker_stat(r, "w1", "reconnects"),
           recovered=worker_stat(r, "w1", "recovered"))  # fmt: skip
    assert_at_least_once(acc, 0, "nothing was in hand: the ghost pop is requeued, not redone")
    # attempt 1: moved into w1's processing list for the dropped connection, never handed to a
    # handler, given back unchanged.
    assert ghost_attempts == [1], f"the ghost pop was not recovered (attempts {ghost_attempts})"
    assert queued_attempts == [1]
    assert processing_lists(r).get(keys.processing(Q, "w1"), 0) == 0
    assert recovery <= RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {RECONNECT_BOUND_S}s"
    assert worker_stat(r, "w1", "reconnects") >= 1
    assert worker_stat(r, "w1", "recovered") == 1
    assert r.llen(DEAD) == 0


def test_at_most_once_black_hole_loses_only_the_ghost_pop(
    stoppable_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """--delivery at-most-once, BUS_BATCH_SIZE=1, the 4 s black hole with a ghost pop: the
    message BRPOP handed to the dropped connection is the one loss; everything else, including
    the message pushed during the stop, is handled once."""
    server = stoppable_redis
    r = server.client()
    path = tmp_path / "records.jsonl"
    start_workers(spawn, r, server.url, "w1", handler=SLOW, args=AT_MOST_ONCE, BUS_BATCH_SIZE="1")
    ledger = Ledger(server)
    ghost_id, _, resumed = settle_then_black_hole(server, r, path, ledger, 50)
    ledger.push_many(50)
    records = wait_drained(r, path, ledger, 1, lost={ghost_id})
    acc = account(records, ledger)
    recovery = resume_after(records, resumed)
    report("at-most-once, black hole + ghost pop", ledger, acc, recovery, RECONNECT_BOUND_S,
           lost_as_expected=acc.lost == {ghost_id})  # fmt: skip
    assert_at_most_once(acc, ledger, {ghost_id})
    assert recovery <= RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {RECONNECT_BOUND_S}s"
    assert r.llen(DEAD) == 0
