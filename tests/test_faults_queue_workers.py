"""List mode, at-least-once, when the fault is in the workers or the messages: a worker killed
-9 mid-message beside a survivor, a handler that always fails, garbage on ``pending``.

Real processes as in :mod:`tests.test_faults_queue_links`; every message accounted for by id
(:mod:`tests.ledger`), resume times against their bounds (:mod:`tests.queuekit`).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.lists import QueueOps
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import decode, keys
from tests.conftest import QUICK_ENV
from tests.ledger import Ledger, account, assert_at_least_once, resume_after
from tests.procs import ROOT, Proc, daemon_cmd, project_env, read_records
from tests.queuekit import (
    CONSUMERS,
    CRASH_BOUND_S,
    DEAD,
    FAIL,
    NO_RECONNECT_BOUND_S,
    PENDING,
    REAPER_S,
    SLOW,
    Q,
    report,
    start_workers,
    wait_drained,
    wait_started,
    worker_stat,
)

pytestmark = pytest.mark.slow


def test_kill_9_mid_message_survivor_takes_over(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Two workers; the one handling a 3 s message is killed -9: after its heartbeat expires the
    survivor's reaper requeues the message and the survivor handles it; the dead worker leaves
    bus:{default}:consumers."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    workers = start_workers(spawn, r, fresh_redis.url, "w1", "w2", handler=SLOW,
                            BUS_REAPER_INTERVAL_S=str(REAPER_S))  # fmt: skip
    ledger = Ledger(fresh_redis)
    ledger.push_many(50)
    wait_drained(r, path, ledger, 2)
    in_hand = ledger.push(sleep_s=3)
    start = wait_started(path, in_hand)
    victim = next(n for n, p in workers.items() if p.pid == start["pid"])
    survivor = next(n for n in workers if n != victim)
    in_flight = int(r.llen(keys.processing(Q, victim)))
    workers[victim].signal(signal.SIGKILL)
    t_kill = time.monotonic()
    workers[victim].wait(5)
    ledger.push_many(50)
    taken = wait_started(path, in_hand, CRASH_BOUND_S + 5, "the survivor took over",
                         not_pid=start["pid"])  # fmt: skip
    records = wait_drained(r, path, ledger, 1)
    acc = account(records, ledger)
    recovery = taken["t"] - t_kill
    report("kill -9 mid-message", ledger, acc, recovery, CRASH_BOUND_S, in_flight=in_flight,
           victim=victim, in_hand_attempt=taken["attempt"])  # fmt: skip
    assert in_flight == 1
    assert_at_least_once(acc, in_flight, "at most what the dead worker held")
    assert taken["pid"] == workers[survivor].pid and taken["attempt"] == 2
    assert recovery <= CRASH_BOUND_S, f"takeover {recovery:.2f}s > {CRASH_BOUND_S}s"
    assert r.zscore(CONSUMERS, victim) is None, "the dead worker is still registered"
    assert r.zscore(CONSUMERS, survivor) is not None
    assert r.exists(keys.processing(Q, victim)) == 0
    assert r.llen(DEAD) == 0


def test_failing_handler_dead_letters_after_3_attempts_then_requeue(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """BUS_MAX_ATTEMPTS=3: each message is tried exactly 3 times and lands once in the dead list
    with its raw bytes; ``dead requeue`` puts them back and a recording worker handles each
    once, as attempt 1."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    failing = start_workers(spawn, r, fresh_redis.url, "w1", handler=FAIL, BUS_MAX_ATTEMPTS="3")
    ledger = Ledger(fresh_redis)
    ledger.push_many(100)
    wait_for(lambda: r.llen(DEAD) >= 100, 20, "100 dead letters", every_s=0.02)
    wait_drained(r, path, ledger, lost=None)
    attempts: dict[str, list[int]] = {}
    for x in read_records(path):
        assert x["event"] == "attempt"
        attempts.setdefault(x["id"], []).append(x["attempt"])
    assert set(attempts) == set(ledger.accepted)
    bad = {i: a for i, a in attempts.items() if sorted(a) != [1, 2, 3]}
    assert not bad, f"not exactly attempts 1, 2, 3: {list(bad.items())[:5]}"
    entries = [json.loads(e) for e in r.lrange(DEAD, 0, -1)]
    assert len(entries) == 100
    dead_envs = [decode(e["raw"]) for e in entries]
    assert sorted(e.id for e in dead_envs) == sorted(ledger.accepted), "not each message once"
    assert all(e.attempt == 3 and e.payload == ledger.accepted[e.id] for e in dead_envs)
    assert all("attempt 3" in e["reason"] and "RuntimeError" in e["reason"] for e in entries)
    assert failing["w1"].stop() == 0

    path.rename(tmp_path / "records-failing.jsonl")
    start_workers(spawn, r, fresh_redis.url, "w2")
    t_requeue = time.monotonic()
    done = subprocess.run(daemon_cmd("dead", "requeue", "--queue", Q), capture_output=True,
                          text=True, timeout=30, cwd=ROOT,
                          env=project_env(fresh_redis.url, **QUICK_ENV))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "requeued 100; kept 0" in done.stdout, done.stdout
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, t_requeue)
    report("handler always fails (3 attempts) + dead requeue", ledger, acc, recovery, 5.0,
           dead=len(entries), attempts_per_message=3)  # fmt: skip
    assert_at_least_once(acc, 0, "requeued once each")
    assert all(x["attempt"] == 1 for x in records), "requeued messages start again at attempt 1"
    assert recovery <= 5.0, f"first handled {recovery:.2f}s after `dead requeue` started (> 5 s)"
    assert r.llen(DEAD) == 0


def test_garbage_is_dead_lettered_with_raw_bytes(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Not JSON, a JSON object with wrong fields and 1 MiB of random bytes LPUSHed straight onto
    pending between good messages: the garbage is dead-lettered with its exact bytes, every good
    message is handled once, the worker keeps running."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    worker = start_workers(spawn, r, fresh_redis.url, "w1")["w1"]
    ledger = Ledger(fresh_redis)
    junk = [
        b"not json {",
        json.dumps({"v": 1, "id": 3, "hello": "world"}).encode(),
        os.urandom(1 << 20),
    ]
    for raw in junk:
        ledger.push_many(30)
        r.lpush(PENDING, raw)
    t_junk = time.monotonic()
    ledger.push_many(30)
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, t_junk)
    entries = [json.loads(e) for e in r.lrange(DEAD, 0, -1)]
    report("garbage on pending", ledger, acc, recovery, NO_RECONNECT_BOUND_S, dead=len(entries),
           junk_bytes=sum(len(j) for j in junk))  # fmt: skip
    assert_at_least_once(acc, 0, "garbage touches no good message")
    assert len(entries) == len(junk)
    kept = sorted(
        e["raw"].encode() if "raw" in e else base64.b64decode(e["raw_b64"]) for e in entries
    )
    assert kept == sorted(junk), "a dead letter does not keep the exact bytes"
    assert all(e["reason"].startswith("undecodable") for e in entries)
    assert worker.proc.poll() is None, "the worker died"
    assert worker_stat(r, "w1", "reconnects") == 0
    assert worker_stat(r, "w1", "dead_lettered") == len(junk)
    assert recovery <= NO_RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {NO_RECONNECT_BOUND_S}s"


def test_a_processing_list_whose_worker_is_unregistered_is_reaped(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A processing list whose worker is in no registry and holds no lease (a registry lost to a
    FLUSH, an AOF that did not load whole) is found by a worker's reaper on its first pass and
    given back, attempt + 1; a live worker whose registry entry was lost keeps its message (its
    lease says it lives)."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    ledger = Ledger(fresh_redis)
    stranded = ledger.push_many(5)
    assert len(QueueOps(r, Q).claim("gone", 5)) == 5  # claimed by a worker nobody knows of
    live = start_workers(spawn, r, fresh_redis.url, "live", handler=SLOW)
    in_hand = ledger.push(sleep_s=3)
    wait_started(path, in_hand)
    r.delete(CONSUMERS)  # "live" is handling it, and no longer registered
    start_workers(spawn, r, fresh_redis.url, "reaper", handler=SLOW,
                  BUS_REAPER_INTERVAL_S=str(REAPER_S))  # fmt: skip
    records = wait_drained(r, path, ledger, 2)
    handled = [x for x in records if x["event"] == "handled"]
    assert sorted(x["id"] for x in handled) == sorted([*stranded, in_hand])
    assert {x["attempt"] for x in handled if x["id"] in stranded} == {2}
    assert [x["pid"] for x in handled if x["id"] == in_hand] == [live["live"].pid]
    assert r.exists(keys.processing(Q, "gone")) == 0
    assert r.llen(DEAD) == 0


def test_the_reaper_command_reaps_an_unregistered_workers_list(
    fresh_redis: RedisServer,
) -> None:
    """``python -m consumers reaper --once`` gives back a list whose worker is unregistered."""
    r = fresh_redis.client()
    Ledger(fresh_redis).push_many(3)
    QueueOps(r, Q).claim("gone", 3)
    env = project_env(fresh_redis.url, **QUICK_ENV)
    done = subprocess.run(daemon_cmd("reaper", "--once"), capture_output=True, text=True,
                          timeout=30, cwd=ROOT, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "reaped gone: requeued 3, dead-lettered 0" in done.stdout, done.stdout
    assert r.llen(PENDING) == 3 and r.exists(keys.processing(Q, "gone")) == 0
