"""Concurrency inside one worker process: ``--concurrency N`` messages in its handlers' hands at
once, a plain function on N threads and an ``async def`` awaited N at a time on one event loop;
messages started in queue order; each settled when its own handler finishes, never before; what a
worker claims beyond its slots bounded; a crash or a stop with N in hand loses nothing.

Real worker processes on a Redis of the test's own; the handlers write a line when they start and
when they finish (tests/handlers_for_tests.py), so every message is accounted for by id.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, keys
from producer.store.envelope import decode
from tests.ledger import Ledger
from tests.procs import Proc, project_env, read_records, run_cli
from tests.queuekit import PENDING, PROCESSING_GLOB, Q

pytestmark = pytest.mark.slow

STUCK = "tests.handlers_for_tests:stuck"  # {"sleep_s": s}: sleeps s, then records it handled
ASYNC = "tests.handlers_for_tests:async_stuck"
ASYNC_WORK = "tests.handlers_for_tests:async_work"


def events(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    return [x for x in read_records(tmp_path / "records.jsonl") if x["event"] == event]


def wait_handled(tmp_path: Path, n: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    return wait_for(lambda: len(x := events(tmp_path, "handled")) >= n and x, timeout_s,
                    f"{n} messages handled")  # fmt: skip


def most_at_once(tmp_path: Path) -> int:
    """The most messages that were between their start and their end at one time."""
    marks = sorted((x["t"], 1 if x["event"] == "start" else -1)
                   for x in read_records(tmp_path / "records.jsonl"))  # fmt: skip
    now = most = 0
    for _, step in marks:
        now += step
        most = max(most, now)
    return most


def drained(r: Any) -> bool:
    return not r.llen(PENDING) and not r.keys(PROCESSING_GLOB)


def test_a_plain_handler_runs_on_n_threads_at_once_and_no_more(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """24 messages of 0.3 s, ``--concurrency 8``: 8 run at once, never 9; each is handled once
    and acknowledged (nothing left pending or in a processing list)."""
    r = fresh_redis.client()
    ids = Ledger(fresh_redis).push_many(24, sleep_s=0.3)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK, "--concurrency", "8")
    handled = wait_handled(tmp_path, 24)
    wait_for(lambda: drained(r), 10, "every message acknowledged")
    assert Counter(x["id"] for x in handled) == Counter(ids)
    assert most_at_once(tmp_path) == 8


@pytest.mark.parametrize("concurrency", [1, 4])
def test_messages_start_in_queue_order(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, concurrency: int
) -> None:
    """The oldest message starts first: with one slot strictly in order; with four, in waves of
    four (a wave's handlers run at once, so within one they finish in any order)."""
    ids = Ledger(fresh_redis).push_many(12, sleep_s=0.3)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
          "--concurrency", str(concurrency))  # fmt: skip
    wait_handled(tmp_path, 12)
    started = [x["id"] for x in sorted(events(tmp_path, "start"), key=lambda x: x["t"])]
    waves = [set(started[i : i + concurrency]) for i in range(0, 12, concurrency)]
    assert waves == [set(ids[i : i + concurrency]) for i in range(0, 12, concurrency)]


def test_an_async_def_handler_is_awaited_n_at_a_time(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """An ``async def`` handler runs (its line after the ``await`` is written), 20 at a time on
    one event loop, each message once; nothing is acknowledged without having run."""
    r = fresh_redis.client()
    ids = Ledger(fresh_redis).push_many(60, sleep_s=0.3)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", ASYNC,
                 "--concurrency", "20")  # fmt: skip
    handled = wait_handled(tmp_path, 60)
    wait_for(lambda: drained(r), 10, "every message acknowledged")
    assert Counter(x["id"] for x in handled) == Counter(ids)
    assert most_at_once(tmp_path) == 20
    assert "never awaited" not in proc.log() and "Traceback" not in proc.log()


def test_an_async_handler_with_a_context_reports_progress_and_returns_its_result(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """``async def handler(env, ctx)``: its progress report and its result land in the record
    of a tracked message, as for a plain function."""
    ledger = Ledger(fresh_redis)
    sent = ledger.producer.push({"sleep_s": 0.3, "result": {"pages": 3}}, track=True)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", ASYNC_WORK)
    wait_handled(tmp_path, 1)
    shown = wait_for(lambda: (x := run_cli("message", sent.envelope.id, "--json",
                                           env=project_env(fresh_redis.url))).returncode == 0
                     and '"handled"' in x.stdout and x, 10, "the record")  # fmt: skip
    assert '"pages": 3' in shown.stdout or '"pages":3' in shown.stdout, shown.stdout
    assert '"progress": "1"' in shown.stdout or '"progress": 1' in shown.stdout, shown.stdout


def test_a_busy_worker_holds_its_slots_and_little_more(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """200 messages of 0.2 s and a worker with 4 slots: its processing list never holds more
    than its 4 slots and one message ahead (what 4 slots start within 50 ms at that pace), so
    a second worker started later finds most of the backlog and takes its share."""
    r = fresh_redis.client()
    Ledger(fresh_redis).push_many(200, sleep_s=0.2)
    spawn("worker", fresh_redis.url, "--name", "first", "--handler", STUCK, "--concurrency", "4")
    held = []
    for _ in range(20):
        held.append(r.llen(keys.processing(Q, "first")))
        time.sleep(0.05)
    assert max(held) <= 5, held
    assert r.llen(PENDING) >= 150
    spawn("worker", fresh_redis.url, "--name", "second", "--handler", STUCK, "--concurrency", "4")
    handled = wait_handled(tmp_path, 200, timeout_s=60)
    pids = Counter(x["pid"] for x in handled)
    assert len(pids) == 2 and min(pids.values()) >= 60, pids


def test_kill_9_with_eight_in_hand_loses_nothing(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """kill -9 of a worker with 8 handlers running: started again under its name, it gives back
    what the dead process held; every message is handled, and only those it held can be
    handled twice (at-least-once)."""
    r = fresh_redis.client()
    ids = Ledger(fresh_redis).push_many(40, sleep_s=0.5)
    victim = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                   "--concurrency", "8")  # fmt: skip
    wait_for(lambda: len(events(tmp_path, "start")) >= 8, 10, "8 handlers running")
    in_hand = r.lrange(keys.processing(Q, "w"), 0, -1)
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK, "--concurrency", "8")
    wait_for(lambda: set(x["id"] for x in events(tmp_path, "handled")) == set(ids), 30,
             "every message handled")  # fmt: skip
    wait_for(lambda: drained(r), 10, "every message acknowledged")
    handled = Counter(x["id"] for x in events(tmp_path, "handled"))
    twice = {i for i, n in handled.items() if n > 1}
    held_ids = {decode(raw).id for raw in in_hand}
    assert 8 <= len(held_ids) <= 9 and twice <= held_ids, (twice, held_ids)


def test_sigterm_lets_the_handlers_in_hand_finish_and_gives_back_the_rest(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """SIGTERM with 8 handlers running: they finish and are acknowledged, the worker exits 0,
    and what no handler had started is pending again, unchanged (attempt 1)."""
    r = fresh_redis.client()
    ids = Ledger(fresh_redis).push_many(20, sleep_s=1.0)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", STUCK,
                 "--concurrency", "8")  # fmt: skip
    wait_for(lambda: len(events(tmp_path, "start")) >= 8, 10, "8 handlers running")
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.log()[-2000:]
    started = {x["id"] for x in events(tmp_path, "start")}
    assert len(started) == 8
    assert {x["id"] for x in events(tmp_path, "handled")} == started
    rest: list[Envelope] = [decode(raw) for raw in r.lrange(PENDING, 0, -1)]
    assert {e.id for e in rest} == set(ids) - started and {e.attempt for e in rest} == {1}
    assert not r.keys(PROCESSING_GLOB)
