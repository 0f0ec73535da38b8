"""One queue under a fault test: its names, the bounds the quick settings give, its workers as
``python -m consumers worker`` processes, the state Redis holds for it, draining, the report.

A test waits (bounded) until ``pending`` and every processing list are empty and every worker
is idle in its blocking pop (:func:`wait_drained`), then accounts for every message by id
(:mod:`tests.ledger`). It also measures the resume time, from the end of the fault to the first
handling that began after it, against a stated bound; ``pytest -s`` prints one ``[fault]`` line
per test with the numbers (:func:`report`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for, wait_no_problems
from producer import keys
from producer.store.counts import read_balance
from tests.conftest import QUICK_ENV
from tests.ledger import Account, Ledger, Records, handled_ids
from tests.procs import Proc, read_records

Q = "default"
PENDING = keys.pending(Q)
DEAD = keys.dead(Q)
CONSUMERS = keys.consumers(Q)
PROCESSING_GLOB = keys.processing_prefix(Q) + "*"
RECORD = "tests.handlers_for_tests:record"
SLOW = "tests.handlers_for_tests:slow"
FAIL = "tests.handlers_for_tests:fail_always"
AT_MOST_ONCE = ("--delivery", "at-most-once")

BLOCK_S = float(QUICK_ENV["BUS_BLOCK_TIMEOUT_S"])  # 1 s
READ_DEADLINE_S = float(QUICK_ENV["BUS_WORKER_READ_TIMEOUT_S"])  # 2 s
BACKOFF_CAP_S = float(QUICK_ENV["BUS_BACKOFF_CAP_S"])  # 0.5 s
HEARTBEAT_TTL_S = float(QUICK_ENV["BUS_HEARTBEAT_TTL_S"])  # 3 s
REAPER_S = 0.5
BATCH_SIZE = 100  # the default BUS_BATCH_SIZE: the most a worker holds unacknowledged

# Resume bounds.
RECONNECT_BOUND_S = BLOCK_S + BACKOFF_CAP_S + 1.0  # a broken link: notice, back off, go (2.5 s)
CRASH_BOUND_S = HEARTBEAT_TTL_S + REAPER_S + 1.0  # a dead worker: TTL, reaper pass, slack (4.5 s)
NO_RECONNECT_BOUND_S = 1.0  # nothing to reconnect: the next message is served at once


def start_workers(
    spawn: Callable[..., Proc],
    r: redis.Redis,
    url: str,
    *names: str,
    handler: str = RECORD,
    args: tuple[str, ...] = (),
    **env: str,
) -> dict[str, Proc]:
    """Spawn one worker per name, then wait until each is blocked in its pop."""
    workers = {
        name: spawn("worker", url, "--name", name, "--handler", handler, *args, **env)
        for name in names
    }
    for name in names:
        wait_blocked(r, name)
    return workers


def wait_blocked(r: redis.Redis, name: str, timeout_s: float = 10.0) -> dict[str, str]:
    """Wait until worker ``name``'s connection is blocked in its pop; its CLIENT LIST entry."""

    def blocked() -> dict[str, str] | None:
        return next((c for c in r.client_list() if c.get("name") == f"bus:worker:{name}"
                     and "b" in c["flags"]), None)  # fmt: skip

    return wait_for(blocked, timeout_s, f"worker {name} blocked in its pop", every_s=0.01)


def wait_started(
    path: Path,
    mid: str,
    timeout_s: float = 5.0,
    what: str = "the slow handler started",
    not_pid: int | None = None,
) -> dict[str, Any]:
    """Wait for the first "start" record of message ``mid`` (by a process other than
    ``not_pid``); that record."""

    def started() -> dict[str, Any] | None:
        return next((x for x in read_records(path) if x["id"] == mid and x["event"] == "start"
                     and x["pid"] != not_pid), None)  # fmt: skip

    return wait_for(started, timeout_s, what, every_s=0.02)


def processing_lists(r: redis.Redis) -> dict[str, int]:
    """Every processing list of the queue and its length."""
    return {k.decode(): int(r.llen(k)) for k in r.scan_iter(match=PROCESSING_GLOB)}


def workers_idle(r: redis.Redis, n_workers: int) -> bool:
    """Exactly ``n_workers`` worker connections, each blocked in its pop."""
    clients = [c for c in r.client_list() if c.get("name", "").startswith("bus:worker:")]
    return len(clients) == n_workers and all("b" in c["flags"] for c in clients)


def producer_conns(r: redis.Redis) -> set[str]:
    """The ids of the producers' connections."""
    return {c["id"] for c in r.client_list() if c.get("name") == "bus:producer"}


def worker_stat(r: redis.Redis, name: str, counter: str) -> int:
    """One counter of worker ``name``'s stats hash (0 if not written)."""
    value = r.hget(keys.stats("worker", f"{Q}:{name}"), counter)
    return int(value) if value is not None else 0


def wait_drained(
    r: redis.Redis,
    path: Path,
    ledger: Ledger,
    n_workers: int = 1,
    *,
    lost: Collection[str] | None = (),
    timeout_s: float = 20.0,
) -> Records:
    """Wait until pending and every processing list are empty, the workers are idle and every
    accepted id but the ``lost`` ones was handled (``lost=None``: handled or not); then 1 s more
    with nothing new. The records.

    An idle worker alone does not mean a drained queue: its dispatcher blocks in its next pop
    while a slot may still be running the message before (at-most-once keeps no processing list
    to show it), so the ids are what is waited for."""

    def state() -> str:
        proc = {k: n for k, n in processing_lists(r).items() if n}
        expected = set() if lost is None else set(ledger.accepted) - set(lost)
        missing = len(expected - handled_ids(read_records(path)))
        idle = workers_idle(r, n_workers)
        if r.llen(PENDING) == 0 and not proc and idle and not missing:
            return ""
        return (
            f"pending {r.llen(PENDING)}, processing {proc}, workers idle {idle}, "
            f"accepted but unhandled {missing}"
        )

    def settle(within_s: float) -> None:
        wait_no_problems(lambda: [why] if (why := state()) else [], within_s, "a drained queue",
                         every_s=0.02)  # fmt: skip

    settle(timeout_s)
    before = len(read_records(path))
    time.sleep(1.0)
    settle(2 * BLOCK_S)  # a worker is between two blocking pops for an instant
    records = read_records(path)
    assert len(records) == before, "records still arriving after the queue was drained"
    return records


def report(
    name: str,
    ledger: Ledger,
    acc: Account,
    recovery_s: float,
    bound_s: float,
    dead: int = 0,
    **extra: object,
) -> None:
    """Print the ``[fault]`` line: the measured resume time, its bound, the accounting."""
    more = "".join(f", {k} {v}" for k, v in extra.items())
    print(
        f"\n[fault] {name}: recovery {recovery_s:.3f}s (bound {bound_s:.1f}s), "
        f"accepted {len(ledger.accepted)}, lost {len(acc.lost)}, "
        f"duplicates {acc.n_duplicates}, dead-lettered {dead}, "
        f"push raised {len(ledger.raised)} (late {len(acc.late)}){more}"
    )


class BalanceWatch:
    """Reads the queue's balance every 5 ms in a thread; keeps every sample off 0."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.off: list[dict[str, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="balance-watch", daemon=True)

    def _run(self) -> None:
        client = self.server.client(socket_timeout=1)
        while not self._stop.is_set():
            with contextlib.suppress(redis.RedisError):  # Redis restarting: no sample
                balance = read_balance(client, Q)
                self.samples += 1
                if balance["unaccounted"]:
                    self.off.append(balance)
            time.sleep(0.005)

    def __enter__(self) -> BalanceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
