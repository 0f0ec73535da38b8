"""List mode when Redis is out of memory (``maxmemory`` reached, ``noeviction``) while a worker
handles a batch: Redis refuses every write that could grow memory, yet the worker's heartbeat
must go on (it only overwrites), or the reapers (its own and the other workers') would take it
for dead and requeue the messages it is handling.

Real worker processes on a Redis of the test's own; every message accounted for by id.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from tests.ledger import Ledger
from tests.procs import Proc, read_records
from tests.queuekit import HEARTBEAT_TTL_S, PENDING, PROCESSING_GLOB, REAPER_S, SLOW

pytestmark = pytest.mark.slow

MESSAGES = 16
SLEEP_S = 4.5  # all 16 at once take 4.5 s: past the heartbeat TTL (3 s) and two reaper passes


def test_out_of_memory_a_live_worker_is_reaped_by_nobody(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """``w1`` claims all 16 messages (4.5 s each) and handles them at once; Redis then runs out
    of memory for the rest of its handling. Neither ``w1``'s reaper nor idle ``w2``'s requeues them:
    each message is handled exactly once, and once memory is back nothing is left."""
    r = fresh_redis.client()
    ids = Ledger(fresh_redis).push_many(MESSAGES, sleep_s=SLEEP_S)
    env = {"BUS_CONCURRENCY": str(MESSAGES), "BUS_REAPER_INTERVAL_S": str(REAPER_S)}
    w1 = spawn("worker", fresh_redis.url, "--name", "w1", "--handler", SLOW, **env)
    path = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(path)) == MESSAGES, 10, "every message started")
    assert r.llen(PENDING) == 0 and r.llen(keys.processing("default", "w1")) == MESSAGES
    w2 = spawn("worker", fresh_redis.url, "--name", "w2", "--handler", SLOW, **env)
    wait_for(lambda: r.zscore(keys.consumers("default"), "w2"), 10, "w2's first heartbeat")
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)  # every write that may grow memory is refused from now on
    try:
        assert SLEEP_S > HEARTBEAT_TTL_S + 2 * REAPER_S
        wait_for(lambda: len(read_records(path)) >= 2 * MESSAGES, 20, "the batch handled")
        handled_in_oom = Counter(x["id"] for x in read_records(path) if x["event"] == "start")
        oom_refused = "maxmemory" in w1.log() + w2.log()
    finally:
        r.config_set("maxmemory", 0)
    wait_for(lambda: not r.keys(PROCESSING_GLOB) and not r.llen(PENDING), 10, "all settled")
    starts = Counter(x["id"] for x in read_records(path) if x["event"] == "start")
    logs = w1.log() + w2.log()
    assert oom_refused, "Redis never refused a write: the test did not run out of memory"
    assert starts == handled_in_oom == Counter(dict.fromkeys(ids, 1)), starts
    assert "reaped" not in logs and "requeued" not in logs, logs[-3000:]
    # Idle w2's pop was refused all along: it backed off more each time (no busy loop of
    # "reconnects": its link was fine), and said when Redis took commands again.
    attempts = [int(n) for n in re.findall(r"OutOfMemoryError.*reconnect attempt (\d+)", w2.log())]
    assert attempts and max(attempts) >= 4, w2.log()[-2000:]
    wait_for(lambda: "accepts commands again" in w2.log(), 5, "w2 to serve again")
    assert "reconnected" not in w2.log()
