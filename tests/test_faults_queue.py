"""Fault proof of list mode, with real processes: a redis-server of each test's own (AOF on,
``appendfsync always``) and workers as ``python -m consumers worker`` subprocesses.

Every test pushes K >= 100 numbered messages with the fault in the middle, waits (bounded) until
``pending`` and every processing list are empty and every worker is idle in its blocking pop,
then accounts for every message by id from the handler's records:

* at-least-once: every accepted id handled at least once; duplicates counted and bounded by
  what was in flight at the fault; nothing handled that was never pushed; dead list empty
  unless the test expects dead letters;
* at-most-once: lost = accepted - handled, at most one per fault (BUS_BATCH_SIZE=1, so one
  message in hand); never a duplicate.

"Accepted" means ``Producer.push`` returned. A push that raised (Redis down or paused) is not
counted as accepted and is pushed again after the fault under a new id; if the raised one ran
after all (a read timeout, a reply lost in a shutdown) its id may be handled too, and is
reported as ``late``, never as a phantom.

Each test also measures the resume time: from the end of the fault to the first handling that
began after it (``tests.handlers_for_tests`` stamps every record with the host's monotonic clock)
and asserts a stated bound. ``pytest -s`` prints one ``[fault]`` line per test with the numbers.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Producer, decode, keys, make_client
from producer.envelope import new as new_envelope
from tests.conftest import QUICK_ENV, quick_settings
from tests.procs import ROOT, Proc, project_env, read_records
from tests.redisproc import RedisServer

pytestmark = pytest.mark.slow

Q = "default"
PENDING = keys.pending(Q)
DEAD = keys.dead(Q)
CONSUMERS = keys.consumers(Q)
PROCESSING_GLOB = keys.processing_prefix(Q) + "*"
RECORD = "tests.handlers_for_tests:record"
SLOW = "tests.handlers_for_tests:slow"
FAIL = "tests.handlers_for_tests:fail_always"

BLOCK_S = float(QUICK_ENV["BUS_BLOCK_TIMEOUT_S"])  # 1 s
READ_DEADLINE_S = float(QUICK_ENV["BUS_WORKER_READ_TIMEOUT_S"])  # 2 s
BACKOFF_CAP_S = float(QUICK_ENV["BUS_BACKOFF_CAP_S"])  # 0.5 s
HEARTBEAT_TTL_S = float(QUICK_ENV["BUS_HEARTBEAT_TTL_S"])  # 3 s
REAPER_S = 0.5
BATCH_SIZE = 100  # the default BUS_BATCH_SIZE: the most a worker holds unacknowledged
PAUSE_S = 4.0  # the black hole: longer than the block timeout + the read deadline
assert PAUSE_S > BLOCK_S + READ_DEADLINE_S

# Resume bounds.
RECONNECT_BOUND_S = BLOCK_S + BACKOFF_CAP_S + 1.0  # a broken link: notice, back off, go (2.5 s)
CRASH_BOUND_S = HEARTBEAT_TTL_S + REAPER_S + 1.0  # a dead worker: TTL, reaper pass, slack (4.5 s)
NO_RECONNECT_BOUND_S = 1.0  # nothing to reconnect: the next message is served at once


# --- what the test pushed -------------------------------------------------------------------


class Ledger:
    """Numbered pushes: ``accepted`` (id -> payload) and ``raised`` (payloads whose push raised)."""

    def __init__(self, server: RedisServer, **settings: Any) -> None:
        self.producer = Producer(make_client(quick_settings(server.url, **settings), "producer"))
        self.accepted: dict[str, Any] = {}
        self.raised: list[Any] = []
        self.to_retry: list[Any] = []
        self.n = 0

    def payload(self, **extra: Any) -> dict[str, Any]:
        p = {"n": self.n, **extra}
        self.n += 1
        return p

    def try_push(self, payload: dict[str, Any]) -> str | None:
        """One push; None if it raised (then it is retried by :meth:`retry_refused`)."""
        try:
            sent = self.producer.push(payload)
        except (redis.ConnectionError, redis.TimeoutError):
            self.raised.append(payload)
            self.to_retry.append(payload)
            return None
        self.accepted[sent.envelope.id] = payload
        return sent.envelope.id

    def push(self, timeout_s: float = 15.0, **extra: Any) -> str:
        """Push a new numbered message until it is accepted."""
        payload = self.payload(**extra)
        deadline = time.monotonic() + timeout_s
        while (mid := self.try_push(payload)) is None:
            self.to_retry.remove(payload)
            assert time.monotonic() < deadline, f"push of {payload} never accepted"
            time.sleep(0.05)
        return mid

    def push_many(self, count: int, **extra: Any) -> list[str]:
        return [self.push(**extra) for _ in range(count)]

    def retry_refused(self, timeout_s: float = 15.0) -> int:
        """Push again (new ids) every payload whose push raised; returns how many."""
        retried, self.to_retry = self.to_retry, []
        deadline = time.monotonic() + timeout_s
        for payload in retried:
            while self.try_push(payload) is None:
                self.to_retry.remove(payload)
                assert time.monotonic() < deadline, f"push of {payload} never accepted"
                time.sleep(0.05)
        return len(retried)

    def adopt(self, mid: str, payload: Any) -> None:
        """A message pushed by another producer of the test and accepted."""
        self.accepted[mid] = payload


# --- what the workers did -------------------------------------------------------------------


@dataclass
class Account:
    handled: Counter[str]  # id -> handled events
    lost: set[str]  # accepted, never handled
    duplicates: dict[str, int]  # id -> extra handlings
    phantoms: set[str]  # handled, never pushed at all
    late: set[str]  # handled, from a push that raised (it had run after all)

    @property
    def n_duplicates(self) -> int:
        return sum(self.duplicates.values())


def handled_ids(records: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in records if r["event"] == "handled"}


def account(records: list[dict[str, Any]], ledger: Ledger) -> Account:
    handled = Counter(r["id"] for r in records if r["event"] == "handled")
    payload_of = {r["id"]: r["payload"] for r in records}
    accepted = set(ledger.accepted)
    unknown = set(handled) - accepted
    late = {i for i in unknown if payload_of[i] in ledger.raised}
    return Account(
        handled=handled,
        lost=accepted - set(handled),
        duplicates={i: c - 1 for i, c in handled.items() if c > 1},
        phantoms=unknown - late,
        late=late,
    )


def resume_after(records: list[dict[str, Any]], t0: float) -> float:
    """Seconds from ``t0`` to the first handling that began after it (its "start" record, or
    its "handled" record for the instant handler)."""
    begun: dict[tuple[str, int, int], float] = {}
    for rec in records:
        if "t" in rec and rec["event"] in ("start", "handled"):
            key = (rec["id"], rec["attempt"], rec["pid"])
            begun[key] = min(begun.get(key, rec["t"]), rec["t"])
    after = [t for t in begun.values() if t > t0]
    assert after, "no message was handled after the fault"
    return min(after) - t0


def assert_at_least_once(acc: Account, dup_bound: int, why: str) -> None:
    assert not acc.phantoms, f"handled ids that were never pushed: {sorted(acc.phantoms)[:5]}"
    assert not acc.lost, f"{len(acc.lost)} accepted messages never handled: {sorted(acc.lost)[:5]}"
    assert acc.n_duplicates <= dup_bound, (
        f"{acc.n_duplicates} duplicates, bound {dup_bound} ({why}): {acc.duplicates}"
    )


def report(
    name: str,
    ledger: Ledger,
    acc: Account,
    recovery_s: float,
    bound_s: float,
    dead: int = 0,
    **extra: object,
) -> None:
    more = "".join(f", {k} {v}" for k, v in extra.items())
    print(
        f"\n[fault] {name}: recovery {recovery_s:.3f}s (bound {bound_s:.1f}s), "
        f"accepted {len(ledger.accepted)}, lost {len(acc.lost)}, "
        f"duplicates {acc.n_duplicates}, dead-lettered {dead}, "
        f"push raised {len(ledger.raised)} (late {len(acc.late)}){more}"
    )


# --- Redis-side state -----------------------------------------------------------------------


def processing_lists(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(r.llen(k)) for k in r.scan_iter(match=PROCESSING_GLOB)}


def worker_clients(r: redis.Redis) -> list[dict[str, str]]:
    return [c for c in r.client_list() if c.get("name", "").startswith("bus:worker:")]


def workers_idle(r: redis.Redis, n_workers: int) -> bool:
    """Exactly ``n_workers`` worker connections, each blocked in its pop."""
    clients = worker_clients(r)
    return len(clients) == n_workers and all("b" in c["flags"] for c in clients)


def wait_blocked(r: redis.Redis, name: str, timeout_s: float = 10.0) -> dict[str, str]:
    """Wait until worker ``name``'s connection is blocked in its pop; its CLIENT LIST entry."""
    deadline = time.monotonic() + timeout_s
    while True:
        for c in r.client_list():
            if c.get("name") == f"bus:worker:{name}" and "b" in c["flags"]:
                return c
        assert time.monotonic() < deadline, f"worker {name} never blocked in its pop"
        time.sleep(0.01)


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.02)
    return value


def wait_drained(
    r: redis.Redis,
    path: Path,
    ledger: Ledger,
    n_workers: int = 1,
    *,
    expect_all: bool = True,
    timeout_s: float = 20.0,
) -> list[dict[str, Any]]:
    """Wait until pending and every processing list are empty, the workers are idle and (if
    ``expect_all``) every accepted id was handled; then 1 s more with nothing new. The records."""

    def state() -> str:
        proc = {k: n for k, n in processing_lists(r).items() if n}
        missing = len(set(ledger.accepted) - handled_ids(read_records(path)))
        idle = workers_idle(r, n_workers)
        if r.llen(PENDING) == 0 and not proc and idle and not (expect_all and missing):
            return ""
        return (
            f"pending {r.llen(PENDING)}, processing {proc}, workers idle {idle}, "
            f"accepted but unhandled {missing}"
        )

    def settle(within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while (why := state()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not why, f"not drained after {within_s}s: {why}"

    settle(timeout_s)
    before = len(read_records(path))
    time.sleep(1.0)
    settle(2 * BLOCK_S)  # a worker is between two blocking pops for an instant
    records = read_records(path)
    assert len(records) == before, "records still arriving after the queue was drained"
    return records


def producer_conns(r: redis.Redis) -> set[str]:
    return {c["id"] for c in r.client_list() if c.get("name") == "bus:producer"}


def worker_stat(r: redis.Redis, name: str, counter: str) -> int:
    value = r.hget(keys.stats("worker", f"{Q}:{name}"), counter)
    return int(value) if value is not None else 0


@pytest.fixture
def stoppable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """``fresh_redis`` (AOF, appendfsync always) that also takes DEBUG from loopback, so that
    :func:`black_hole` can stop it inside a command (see there)."""
    server = RedisServer(tmp_path / "redis", "--enable-debug-command", "local", appendonly=True)
    server.start()
    yield server
    server.kill()


def open_client(server: RedisServer, name: str) -> redis.Redis:
    """A connection opened now, whose read deadline outlasts the black hole."""
    client = make_client(quick_settings(server.url, socket_timeout_s=PAUSE_S + 6), "producer", name)
    assert client.ping()
    return client


def make_message(ledger: Ledger, tag: str) -> tuple[bytes, dict[str, Any], str]:
    payload = ledger.payload(**{tag: True})
    env = new_envelope(payload, src=f"test-{tag}", seq=1, mode="prodcons")
    return env.encode(), payload, env.id


def settle_then_black_hole(
    server: RedisServer, r: redis.Redis, path: Path, ledger: Ledger, n: int
) -> tuple[str, str, float]:
    """Push ``n`` and let w1 drain them, then one marker, so that a fresh blocking pop (reissued
    right after the marker) is surely still blocked when :func:`black_hole` stops Redis."""
    ledger.push_many(n)
    wait_drained(r, path, ledger)
    marker = ledger.push()
    wait_until(lambda: marker in handled_ids(read_records(path)), 5, "the marker handled")
    wait_blocked(r, "w1")
    return black_hole(server, ledger)


def black_hole(server: RedisServer, ledger: Ledger) -> tuple[str, str, float]:
    """SIGSTOP Redis for PAUSE_S, then SIGCONT, with two messages pushed across it through
    connections opened before (both accepted: their replies come after SIGCONT):

    * ``ghost``: sent in one write after ``DEBUG SLEEP 0.3``; Redis is stopped while it sleeps
      inside that command, so on SIGCONT it runs the LPUSH in the same pass, before its event
      loop times out blocked clients: the worker's BLMOVE (or BRPOP), sent before the stop,
      expired and on a connection the worker dropped during the stop, is served: the ghost pop.
      (Stopped in epoll_wait instead, Redis returns EINTR on SIGCONT (signal(7)) and times the
      pop out first: no ghost pop, or only by chance.)
    * ``queued``: LPUSHed during the stop; it waits in the kernel and runs after SIGCONT.

    Returns (ghost id, queued id, when Redis was resumed)."""
    parked, late = open_client(server, "parked"), open_client(server, "late")
    ghost_raw, ghost_payload, ghost_id = make_message(ledger, "ghost")
    queued_raw, queued_payload, queued_id = make_message(ledger, "queued")
    replies: dict[str, Any] = {}

    def park() -> None:
        pipe = parked.pipeline(transaction=False)
        pipe.execute_command("DEBUG", "SLEEP", "0.3")
        pipe.lpush(PENDING, ghost_raw)
        replies["ghost"] = pipe.execute(raise_on_error=False)

    def queue() -> None:
        try:
            replies["queued"] = late.lpush(PENDING, queued_raw)
        except redis.RedisError as exc:  # reported by the assertion below
            replies["queued"] = exc

    parker = threading.Thread(target=park, daemon=True)
    queuer = threading.Thread(target=queue, daemon=True)
    parker.start()
    time.sleep(0.1)  # Redis is now inside DEBUG SLEEP
    server.pause()
    try:
        time.sleep(0.2)
        queuer.start()
        time.sleep(PAUSE_S - 0.2)
    finally:
        server.resume()
    resumed = time.monotonic()
    parker.join(10)
    queuer.join(10)
    assert isinstance(replies.get("queued"), int), f"push during the stop failed: {replies}"
    assert len(replies.get("ghost", [])) == 2 and isinstance(replies["ghost"][1], int), replies
    ledger.adopt(ghost_id, ghost_payload)
    ledger.adopt(queued_id, queued_payload)
    return ghost_id, queued_id, resumed


# --- 1. idle timeout ------------------------------------------------------------------------


def test_idle_timeout_closes_idle_connections_and_nothing_breaks(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CONFIG SET timeout 1 and three bursts 3 s apart: the producer's pooled connection is closed
    while idle; every message is handled exactly once and the worker never has to reconnect."""
    r = fresh_redis.client()
    r.config_set("timeout", 1)
    path = tmp_path / "records.jsonl"
    spawn("worker", fresh_redis.url, "--name", "w1", "--handler", RECORD)
    wait_blocked(r, "w1")
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
            wait_until(
                lambda: set(ledger.accepted) <= handled_ids(read_records(path)), 10, "burst handled"
            )
            recoveries.append(resume_after(read_records(path), gap_end))
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    report(
        "idle timeout",
        ledger,
        acc,
        max(recoveries),
        RECONNECT_BOUND_S,
        producer_connections_closed_by_server=closed,
    )
    assert_at_least_once(acc, 0, "no fault reaches a message: zero duplicates")
    assert not acc.late and not ledger.raised, "a push failed on a connection closed while idle"
    assert max(recoveries) <= RECONNECT_BOUND_S, f"resume {recoveries} > {RECONNECT_BOUND_S}s"
    assert worker_stat(r, "w1", "reconnects") == 0
    assert r.llen(DEAD) == 0


# --- 2. CLIENT KILL -------------------------------------------------------------------------


def test_client_kill_while_blocked(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLIENT KILL TYPE normal while the worker waits in BLMOVE: it reconnects, nothing is
    lost, nothing duplicated (nothing was in hand)."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    spawn("worker", fresh_redis.url, "--name", "w1", "--handler", RECORD)
    wait_blocked(r, "w1")
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
    report(
        "CLIENT KILL while blocked",
        ledger,
        acc,
        recovery,
        RECONNECT_BOUND_S,
        killed_clients=killed,
        reconnects=worker_stat(r, "w1", "reconnects"),
    )
    assert_at_least_once(acc, 0, "killed while blocked: nothing was in hand")
    assert recovery <= RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {RECONNECT_BOUND_S}s"
    assert after["id"] != before["id"], "the worker's connection was not replaced"
    assert worker_stat(r, "w1", "reconnects") == 1
    assert r.llen(DEAD) == 0


def test_client_kill_while_handling(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLIENT KILL TYPE normal during a 1 s handler: the message in hand is handled at most once
    more, everything else exactly once."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    spawn("worker", fresh_redis.url, "--name", "w1", "--handler", SLOW)
    wait_blocked(r, "w1")
    ledger = Ledger(fresh_redis)
    ledger.push_many(50)
    wait_drained(r, path, ledger)
    before = wait_blocked(r, "w1")
    in_hand = ledger.push(sleep_s=1)
    wait_until(
        lambda: any(x["id"] == in_hand and x["event"] == "start" for x in read_records(path)),
        5,
        "the slow handler started",
    )
    in_flight = int(r.llen(keys.processing(Q, "w1")))
    killed = r.client_kill_filter(_type="normal")
    assert killed >= 2, f"killed {killed}: expected the worker's and its admin connection"
    ledger.push_many(50)
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    hand_done = min(x["t"] for x in records if x["id"] == in_hand and x["event"] == "handled")
    recovery = resume_after(records, hand_done)
    after = wait_blocked(r, "w1")
    report(
        "CLIENT KILL while handling",
        ledger,
        acc,
        recovery,
        RECONNECT_BOUND_S,
        in_flight=in_flight,
        reconnects=worker_stat(r, "w1", "reconnects"),
        in_hand_handled=acc.handled[in_hand],
    )
    assert in_flight == 1
    assert_at_least_once(acc, in_flight, "only the message in hand may be handled again")
    assert set(acc.duplicates) <= {in_hand}, acc.duplicates
    assert recovery <= RECONNECT_BOUND_S, (
        f"resume {recovery:.2f}s after the handler returned > {RECONNECT_BOUND_S}s"
    )
    assert after["id"] != before["id"], "the worker's connection was not replaced"
    assert r.llen(DEAD) == 0


# --- 3. Redis restart -----------------------------------------------------------------------


def test_redis_restart_with_aof_loses_nothing(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Redis restarted (SIGTERM, same port, same AOF) while a producer pushes every 5 ms: every
    accepted message is handled; a duplicate only for a message in flight at the restart."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    spawn("worker", fresh_redis.url, "--name", "w1", "--handler", RECORD)
    wait_blocked(r, "w1")
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
    report(
        "Redis restart (AOF)",
        ledger,
        acc,
        recovery,
        RECONNECT_BOUND_S,
        downtime_s=round(restarted["up"] - restarted["down"], 3),
        retried_pushes=retried,
        reconnects=worker_stat(r, "w1", "reconnects"),
    )
    assert_at_least_once(acc, BATCH_SIZE, "at most the batch in flight at the restart")
    assert set(acc.duplicates) <= redelivered, "a duplicate that did not come back via recovery"
    assert recovery <= RECONNECT_BOUND_S, f"resume {recovery:.2f}s > {RECONNECT_BOUND_S}s"
    assert worker_stat(r, "w1", "reconnects") >= 1
    assert len(ledger.accepted) >= 140
    assert r.llen(DEAD) == 0


# --- 4. black hole --------------------------------------------------------------------------


def test_black_hole_and_ghost_pop(
    stoppable_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """SIGSTOP Redis for 4 s (> block timeout + read deadline) while the worker is blocked in
    BLMOVE: the worker's read deadline fires, it reconnects after SIGCONT. The ghost pop (the
    stale BLMOVE served on SIGCONT to the connection the worker dropped) lands in the worker's
    processing list and is given back by the worker unchanged (attempt 1: it never reached a
    handler); a message pushed during the stop
    is handled too; nothing is lost and the processing list ends empty."""
    server = stoppable_redis
    r = server.client()
    path = tmp_path / "records.jsonl"
    spawn("worker", server.url, "--name", "w1", "--handler", RECORD)
    wait_blocked(r, "w1")
    ledger = Ledger(server)
    ghost_id, queued_id, resumed = settle_then_black_hole(server, r, path, ledger, 60)
    ledger.push_many(60)
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, resumed)
    ghost_attempts = [x["attempt"] for x in records if x["id"] == ghost_id]
    queued_attempts = [x["attempt"] for x in records if x["id"] == queued_id]
    report(
        "black hole 4 s + ghost pop",
        ledger,
        acc,
        recovery,
        RECONNECT_BOUND_S,
        ghost_attempts=ghost_attempts,
        queued_attempts=queued_attempts,
        reconnects=worker_stat(r, "w1", "reconnects"),
        recovered=worker_stat(r, "w1", "recovered"),
    )
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


# --- 5. kill -9 with a survivor -------------------------------------------------------------


def test_kill_9_mid_message_survivor_takes_over(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Two workers; the one handling a 3 s message is killed -9: after its heartbeat expires the
    survivor's reaper requeues the message and the survivor handles it; the dead worker leaves
    bus:{default}:consumers."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    workers = {
        name: spawn(
            "worker",
            fresh_redis.url,
            "--name",
            name,
            "--handler",
            SLOW,
            BUS_REAPER_INTERVAL_S=str(REAPER_S),
        )
        for name in ("w1", "w2")
    }
    for name in workers:
        wait_blocked(r, name)
    ledger = Ledger(fresh_redis)
    ledger.push_many(50)
    wait_drained(r, path, ledger, 2)
    in_hand = ledger.push(sleep_s=3)
    start = wait_until(
        lambda: next(
            (x for x in read_records(path) if x["id"] == in_hand and x["event"] == "start"), None
        ),
        5,
        "the slow handler started",
    )
    victim = next(n for n, p in workers.items() if p.pid == start["pid"])
    survivor = next(n for n in workers if n != victim)
    in_flight = int(r.llen(keys.processing(Q, victim)))
    workers[victim].signal(signal.SIGKILL)
    t_kill = time.monotonic()
    workers[victim].wait(5)
    ledger.push_many(50)
    taken = wait_until(
        lambda: next(
            (
                x
                for x in read_records(path)
                if x["id"] == in_hand and x["event"] == "start" and x["pid"] != start["pid"]
            ),
            None,
        ),
        CRASH_BOUND_S + 5,
        "the survivor took over",
    )
    records = wait_drained(r, path, ledger, 1)
    acc = account(records, ledger)
    recovery = taken["t"] - t_kill
    report(
        "kill -9 mid-message",
        ledger,
        acc,
        recovery,
        CRASH_BOUND_S,
        in_flight=in_flight,
        victim=victim,
        in_hand_attempt=taken["attempt"],
    )
    assert in_flight == 1
    assert_at_least_once(acc, in_flight, "at most what the dead worker held")
    assert taken["pid"] == workers[survivor].pid and taken["attempt"] == 2
    assert recovery <= CRASH_BOUND_S, f"takeover {recovery:.2f}s > {CRASH_BOUND_S}s"
    assert r.zscore(CONSUMERS, victim) is None, "the dead worker is still registered"
    assert r.zscore(CONSUMERS, survivor) is not None
    assert r.exists(keys.processing(Q, victim)) == 0
    assert r.llen(DEAD) == 0


# --- 6. a handler that always fails ---------------------------------------------------------


def test_failing_handler_dead_letters_after_3_attempts_then_requeue(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """BUS_MAX_ATTEMPTS=3: each message is tried exactly 3 times and lands once in the dead list
    with its raw bytes; ``dead requeue`` puts them back and a recording worker handles each
    once, as attempt 1."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    failing = spawn(
        "worker", fresh_redis.url, "--name", "w1", "--handler", FAIL, BUS_MAX_ATTEMPTS="3"
    )
    wait_blocked(r, "w1")
    ledger = Ledger(fresh_redis)
    ledger.push_many(100)
    wait_until(lambda: r.llen(DEAD) >= 100, 20, "100 dead letters")
    wait_drained(r, path, ledger, expect_all=False)
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
    assert failing.stop() == 0

    path.rename(tmp_path / "records-failing.jsonl")
    spawn("worker", fresh_redis.url, "--name", "w2", "--handler", RECORD)
    wait_blocked(r, "w2")
    t_requeue = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "consumers", "dead", "requeue", "--queue", Q],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=project_env(fresh_redis.url, **QUICK_ENV),
    )
    assert done.returncode == 0, done.stderr
    assert "requeued 100; kept 0" in done.stdout, done.stdout
    records = wait_drained(r, path, ledger)
    acc = account(records, ledger)
    recovery = resume_after(records, t_requeue)
    report(
        "handler always fails (3 attempts) + dead requeue",
        ledger,
        acc,
        recovery,
        5.0,
        dead=len(entries),
        attempts_per_message=3,
    )
    assert_at_least_once(acc, 0, "requeued once each")
    assert all(x["attempt"] == 1 for x in records), "requeued messages start again at attempt 1"
    assert recovery <= 5.0, f"first handled {recovery:.2f}s after `dead requeue` started (> 5 s)"
    assert r.llen(DEAD) == 0


# --- 7. garbage -----------------------------------------------------------------------------


def test_garbage_is_dead_lettered_with_raw_bytes(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Not JSON, a JSON object with wrong fields and 1 MiB of random bytes LPUSHed straight onto
    pending between good messages: the garbage is dead-lettered with its exact bytes, every good
    message is handled once, the worker keeps running."""
    r = fresh_redis.client()
    path = tmp_path / "records.jsonl"
    worker = spawn("worker", fresh_redis.url, "--name", "w1", "--handler", RECORD)
    wait_blocked(r, "w1")
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
    report(
        "garbage on pending",
        ledger,
        acc,
        recovery,
        NO_RECONNECT_BOUND_S,
        dead=len(entries),
        junk_bytes=sum(len(j) for j in junk),
    )
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


# --- 8. at-most-once ------------------------------------------------------------------------


AT_MOST_ONCE = ("--delivery", "at-most-once")


def at_most_once_workers(
    spawn: Callable[..., Proc], r: redis.Redis, url: str, names: tuple[str, ...]
) -> dict[str, Proc]:
    workers = {
        name: spawn(
            "worker", url, "--name", name, "--handler", SLOW, *AT_MOST_ONCE, BUS_BATCH_SIZE="1"
        )
        for name in names
    }
    for name in names:
        wait_blocked(r, name)
    return workers


def assert_at_most_once(
    name: str,
    ledger: Ledger,
    records: list[dict[str, Any]],
    fault_end: float,
    bound: float,
    expected_lost: set[str],
) -> None:
    acc = account(records, ledger)
    recovery = resume_after(records, fault_end)
    report(
        f"at-most-once, {name}",
        ledger,
        acc,
        recovery,
        bound,
        lost_as_expected=acc.lost == expected_lost,
    )
    assert not acc.phantoms, f"handled ids that were never pushed: {sorted(acc.phantoms)[:5]}"
    assert acc.n_duplicates == 0, f"at-most-once handled twice: {acc.duplicates}"
    assert len(acc.lost) <= 1, f"lost {len(acc.lost)} > 1 (one fault, BUS_BATCH_SIZE=1)"
    assert len(ledger.accepted) - len(set(acc.handled) & set(ledger.accepted)) == len(acc.lost)
    assert acc.lost == expected_lost, f"lost {acc.lost}, expected exactly {expected_lost}"
    assert recovery <= bound, f"resume {recovery:.2f}s > {bound}s"


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
    workers = at_most_once_workers(spawn, r, fresh_redis.url, names)
    ledger = Ledger(fresh_redis)
    ledger.push_many(50)
    wait_drained(r, path, ledger, len(names))
    if fault.startswith("kill"):
        in_hand = ledger.push(sleep_s=2)
        start = wait_until(
            lambda: next(
                (x for x in read_records(path) if x["id"] == in_hand and x["event"] == "start"),
                None,
            ),
            5,
            "the slow handler started",
        )
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
    records = wait_drained(r, path, ledger, 1, expect_all=False)
    assert_at_most_once(fault, ledger, records, fault_end, bound, expected_lost)
    assert processing_lists(r) == {}, "at-most-once uses no processing list"
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
    at_most_once_workers(spawn, r, server.url, ("w1",))
    ledger = Ledger(server)
    ghost_id, _, resumed = settle_then_black_hole(server, r, path, ledger, 50)
    ledger.push_many(50)
    records = wait_drained(r, path, ledger, 1, expect_all=False)
    assert_at_most_once(
        "black hole + ghost pop", ledger, records, resumed, RECONNECT_BOUND_S, {ghost_id}
    )
    assert r.llen(DEAD) == 0
