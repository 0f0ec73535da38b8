"""Poison messages: a handler that kills its process, raises SystemExit, KeyboardInterrupt or a
bare BaseException, returns a coroutine, or is an ``async def``; the same envelope bytes pushed
several times.

Every message ends handled or dead-lettered with its reason within ``BUS_MAX_ATTEMPTS``, and
the messages behind a poison one keep moving. A worker that dies is started again under the
same name, as a supervisor would. Real worker processes on a Redis of the test's own; every
message accounted for by id.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from tests.ledger import Ledger
from tests.procs import Proc, read_records
from tests.queuekit import AT_MOST_ONCE, DEAD, PENDING, PROCESSING_GLOB

pytestmark = pytest.mark.slow

POISON = "tests.handlers_for_tests:poison"
MAX_ATTEMPTS = 3
# One slot: which messages a crash leaves unacknowledged is then exact (tests/test_time_limits.py
# and tests/test_worker_concurrency.py hold the same with several).
ENV = {"BUS_MAX_ATTEMPTS": str(MAX_ATTEMPTS), "BUS_BATCH_SIZE": "10", "BUS_CONCURRENCY": "1"}


def push_with_poison(ledger: Ledger, how: str, n: int = 10, at: int = 3) -> tuple[list[str], str]:
    """``n`` numbered messages, the one at index ``at`` poisoned ``how``: (all ids, its id)."""
    ids = [ledger.push(**({"poison": how} if i == at else {})) for i in range(n)]
    return ids, ids[at]


def dead_letters(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(e) for e in r.lrange(DEAD, 0, -1)]


def dead_id(entry: dict[str, Any]) -> str:
    return str(json.loads(entry["raw"])["id"])


def run_until_dead(spawn: Callable[..., Proc], r: redis.Redis, url: str, poison_id: str,
                   exit_code: int, *args: str, runs: int = 6) -> list[int]:  # fmt: skip
    """Start a worker named ``w`` again each time it dies (with ``exit_code``, each time),
    until ``poison_id`` is dead-lettered and everything else is handled; the exit codes of the
    runs that died. The run that dead-letters it dies too when the handler ran then (a raise),
    not when the worker's recovery found its attempts used up (a crash)."""
    codes: list[int] = []
    for _ in range(runs):
        dead_before = is_dead(r, poison_id)  # this run only drains what is left
        proc = spawn("worker", url, "--name", "w", "--handler", POISON, *args, **ENV)

        def verdict(proc: Proc = proc) -> bool:
            return proc.proc.poll() is not None or drained_with_dead(r, poison_id)

        wait_for(verdict, 30, "the worker's exit, or the poison dead and the rest handled")
        if proc.proc.poll() is None and (dead_before or exit_code == 1):
            return codes  # (a crash never dead-letters its own message: the next run does)
        codes.append(proc.wait(10))
        assert codes[-1] == exit_code, proc.log()[-2000:]
        if drained_with_dead(r, poison_id):
            return codes
    raise AssertionError(f"after {runs} runs the poison message is not dead: exits {codes}")


class Verdict(NamedTuple):
    """What :func:`poisoned_until_dead` saw: the client, every id, the poison one, the exit
    codes of the runs, and how often each message was started and handled."""

    r: redis.Redis
    ids: list[str]
    bad: str
    codes: list[int]
    started: Counter[str]
    handled: Counter[str]


def poisoned_until_dead(server: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, how: str,
                        exit_code: int) -> Verdict:  # fmt: skip
    """Ten messages, the fourth poisoned ``how``, run by :func:`run_until_dead`."""
    r = server.client()
    ids, bad = push_with_poison(Ledger(server), how)
    codes = run_until_dead(spawn, r, server.url, bad, exit_code)
    records = read_records(tmp_path / "records.jsonl")
    return Verdict(r, ids, bad, codes, by_id(records, "start"), by_id(records, "handled"))


def drained_with_dead(r: redis.Redis, poison_id: str) -> bool:
    return is_dead(r, poison_id) and not r.llen(PENDING) and not r.keys(PROCESSING_GLOB)


def is_dead(r: redis.Redis, message_id: str) -> bool:
    return any(dead_id(e) == message_id for e in dead_letters(r))


def by_id(records: list[dict[str, Any]], event: str) -> Counter[str]:
    return Counter(x["id"] for x in records if x["event"] == event)


def test_a_handler_that_kills_its_process_ends_dead_after_max_attempts(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """os._exit(1) on the 4th of a batch of 10: each crash leaves the batch in the processing
    list; the restarted worker gives it back with attempt + 1, and a redelivered message is
    claimed alone, so the poison one alone uses up its attempts: dead with its reason after
    the third, and every other message handled, none more than twice (only some of the three
    before it: those handled and not yet acknowledged when it first crashed)."""
    r, ids, bad, codes, started, handled = poisoned_until_dead(
        fresh_redis, spawn, tmp_path, "exit", 1
    )
    assert codes == [1] * MAX_ATTEMPTS
    assert started[bad] == MAX_ATTEMPTS and bad not in handled
    (entry,) = dead_letters(r)
    assert dead_id(entry) == bad and json.loads(entry["raw"])["attempt"] == MAX_ATTEMPTS
    assert f"BUS_MAX_ATTEMPTS={MAX_ATTEMPTS}" in entry["reason"]
    assert entry["reason"].startswith("worker w stopped before settling attempt 3")
    others = [i for i in ids if i != bad]
    assert set(handled) == set(others), "a message behind the poison one was not handled"
    assert max(handled.values()) <= 2, handled
    assert {i for i in others if handled[i] == 2} <= set(ids[:3]), "only the first crash's"


@pytest.mark.parametrize("how", ["systemexit", "keyboard", "base"])
def test_a_handler_raising_a_base_exception_ends_its_message_then_its_process(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, how: str
) -> None:
    """SystemExit, KeyboardInterrupt or a bare BaseException from the handler: that message is
    settled as a failed attempt (retried, then dead with the exception named), the batch is
    settled (handled ones acked, the rest given back), and the process exits 70 for its
    supervisor. Every other message handled exactly once."""
    r, ids, bad, codes, started, handled = poisoned_until_dead(
        fresh_redis, spawn, tmp_path, how, 70
    )
    assert codes == [70] * MAX_ATTEMPTS
    assert started[bad] == MAX_ATTEMPTS and bad not in handled
    (entry,) = dead_letters(r)
    name = {"systemexit": "SystemExit", "keyboard": "KeyboardInterrupt", "base": "Poison"}[how]
    assert entry["reason"].startswith(f"handler failed on attempt {MAX_ATTEMPTS}")
    assert name in entry["reason"]
    assert handled == Counter({i: 1 for i in ids if i != bad})


def test_at_most_once_a_handler_raising_system_exit_loses_nothing_else(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """At-most-once: the poison message is dead-lettered at once (never delivered twice), the
    rest of the batch the worker had popped goes back to pending, the process exits 70, and
    the next worker handles every other message exactly once."""
    r = fresh_redis.client()
    ids, bad = push_with_poison(Ledger(fresh_redis), "systemexit")
    codes = run_until_dead(spawn, r, fresh_redis.url, bad, 70, *AT_MOST_ONCE)
    wait_for(lambda: len(read_records(tmp_path / "records.jsonl")) >= 10, 10, "every message")
    records = read_records(tmp_path / "records.jsonl")
    assert codes == [70]
    assert by_id(records, "start")[bad] == 1
    assert by_id(records, "handled") == Counter({i: 1 for i in ids if i != bad})
    (entry,) = dead_letters(r)
    assert dead_id(entry) == bad and "SystemExit" in entry["reason"]


def test_a_handler_returning_a_coroutine_is_dead_lettered_not_acked(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A plain function that returns a coroutine (a wrapped async def) never ran its work: the
    message is dead-lettered at once saying so, never counted as handled; the worker goes on."""
    r = fresh_redis.client()
    ids, bad = push_with_poison(Ledger(fresh_redis), "coroutine")
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON, **ENV)
    wait_for(lambda: r.llen(DEAD) and not r.llen(PENDING) and not r.keys(PROCESSING_GLOB), 15,
             "the dead letter and the rest handled")  # fmt: skip
    records = read_records(tmp_path / "records.jsonl")
    assert by_id(records, "handled") == Counter({i: 1 for i in ids if i != bad})
    assert by_id(records, "awaited") == Counter()
    (entry,) = dead_letters(r)
    assert dead_id(entry) == bad
    assert entry["reason"].startswith("rejected: the handler returned coroutine")
    assert proc.proc.poll() is None, "the worker stopped"
    assert "never awaited" not in proc.log()


def test_an_async_def_handler_is_awaited_by_the_worker_and_refused_by_the_subscriber(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """``--handler`` naming an ``async def``: the worker awaits it (each message handled once,
    its line written by the coroutine); the subscriber, which calls plain functions, exits 78
    saying why before it subscribes."""
    r = fresh_redis.client()
    ids = Ledger(fresh_redis).push_many(3)
    spawn("worker", fresh_redis.url, "--handler", "tests.handlers_for_tests:async_record")
    wait_for(lambda: len(read_records(tmp_path / "records.jsonl")) >= 3, 15, "3 handled")
    assert by_id(read_records(tmp_path / "records.jsonl"), "handled") == Counter(ids)
    wait_for(lambda: not r.llen(PENDING) and not r.keys(PROCESSING_GLOB), 10, "acknowledged")
    proc = spawn("subscriber", fresh_redis.url, "--handler",
                 "tests.handlers_for_tests:async_record")  # fmt: skip
    assert proc.wait(15) == 78, proc.log()[-2000:]
    assert "async def" in proc.log() and "Traceback" not in proc.log()


@pytest.mark.parametrize("copies", [2, 5])
@pytest.mark.parametrize("when", ["backlog", "idle"])
def test_identical_envelopes_are_each_handled_once(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path, copies: int, when: str
) -> None:
    """The same envelope bytes LPUSHed ``copies`` times (another language's producer retrying
    its LPUSH, two identical dead letters requeued) are ``copies`` messages: the handler runs
    exactly that often, whether they were claimed in one batch (a backlog) or popped one by one
    (an idle worker), and nothing is left in processing or "requeued" afterwards."""
    r = fresh_redis.client()
    raw = json.dumps({"v": 1, "id": "same-bytes", "payload": {"n": 1}}).encode()
    if when == "backlog":
        r.lpush(PENDING, *[raw] * copies)
    proc = spawn("worker", fresh_redis.url, "--name", "w", "--handler", POISON, **ENV)
    wait_for(lambda: r.zscore(keys.consumers("default"), "w"), 10, "the worker")
    if when == "idle":
        for _ in range(copies):
            r.lpush(PENDING, raw)
    path = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(path)) >= 2 * copies, 10, "every copy handled")
    wait_for(lambda: not r.keys(PROCESSING_GLOB), 5, "an empty processing list")
    proc.stop()
    assert by_id(read_records(path), "handled") == Counter({"same-bytes": copies})
    assert "requeued" not in proc.log(), proc.log()[-2000:]
    assert r.llen(PENDING) == 0 and r.llen(DEAD) == 0
