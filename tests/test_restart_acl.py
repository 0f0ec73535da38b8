"""`make run`'s Redis restarted: its own ACL file (scripts/acl.sh) and its AOF, as a Ctrl-C and
`make run` again leave them. Redis 7.0 replays the AOF as the ``default`` user and checks the
ACL again at each EXEC of it (redis/redis#14541, fixed by #14545; 7.0 and 7.2 have it); every
Lua script with more than one write is in the AOF as a MULTI/EXEC block (Redis 7 replicates
scripts as their effects), so with ``default`` off each block was refused on load: claims undone
(handled messages back in pending, handled again), tracked pushes and their records gone.
scripts/acl.sh now gives ``default`` every right and a password nobody knows (see
deploy/redis/users.acl).

The stack's AOF setting (``--appendfsync`` of scripts/redis.sh, everysec) is used. Its loss
window (acknowledged writes not yet on disk: about a second, two when a fsync is slow) opens
only when Redis does not shut down: a power loss or kernel crash, or a kill -9 while a slow
fsync holds writes back. On SIGTERM Redis writes and fsyncs the AOF before it exits, so after
this clean stop every acknowledged write must come back, and the accounting is exact.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import pytest
import redis

from consumers.worker import AHEAD_BATCHES
from producer import Producer, keys
from producer.store.counts import read_balance
from tests.aclkit import AclRedis, generate
from tests.conftest import quick_settings
from tests.ledger import Ledger, Records, account, handled_ids
from tests.procs import ROOT, Proc, read_records
from tests.queuekit import BATCH_SIZE, PENDING, Q, start_workers, workers_idle

pytestmark = pytest.mark.slow

# The stack's fsync policy, read from the script `make run` starts Redis with.
STACK_FSYNC = re.findall(r"--appendfsync (\w+)", (ROOT / "scripts/redis.sh").read_text())
# A handler that records the message, then takes 3 ms: the producer outpaces it, so the worker
# claims and settles whole batches by script (the multi-write MULTI/EXEC blocks in the AOF).
HANDLER = "tests.handlers_for_tests:slow_record"
HANDLER_S = "0.003"
# Redis is stopped once the worker has handled this many (so the AOF holds many claims and
# settles) while this many more wait in pending (so handling is in flight); then this many more
# messages are pushed after the restart.
HANDLED_BEFORE_STOP, BACKLOG_AT_STOP, AFTER_RESTART = 3 * BATCH_SIZE, 50, 200
ALL_PROCESSING = "bus:{*}:processing:*"
TRACK_EVERY = 4  # every 4th message tracked: its record is written by the same scripts
LEVEL_EVERY = 3  # every 3rd message at a priority level (1 to 9): the level lists, the herald
KEY_EVERY = 5  # every 5th with an idempotency key: a push retried after an error keeps it


def slower(concurrency: int) -> str:
    """The handler's time with ``concurrency`` slots: each slot as slow, so that the worker as a
    whole is no faster than with one and the producer still outpaces it."""
    return str(float(HANDLER_S) * concurrency)


class MixedLedger(Ledger):
    """A :class:`Ledger` pushing as bus-web, every ``TRACK_EVERY``-th message tracked, every
    ``LEVEL_EVERY``-th at a priority level, every ``KEY_EVERY``-th with an idempotency key."""

    def __init__(self, server: AclRedis) -> None:
        url = server.url_for("web")
        super().__init__(server, redis_url=url)
        self.plain = self.producer
        self.tracking = Producer.from_settings(quick_settings(url, track_queues=(Q,)))

    def try_push(self, payload: dict[str, object]) -> str | None:
        tracked = int(payload["n"]) % TRACK_EVERY == 0  # type: ignore[call-overload]
        self.producer = self.tracking if tracked else self.plain
        if int(payload["n"]) % LEVEL_EVERY == 0:  # type: ignore[call-overload]
            payload["priority"] = 1 + int(payload["n"]) % 9  # type: ignore[call-overload]
        if int(payload["n"]) % KEY_EVERY == 0:  # type: ignore[call-overload]
            payload["key"] = f"k-{payload['n']}"
        return super().try_push(payload)

    def tracked_ids(self) -> set[str]:
        return {i for i, p in self.accepted.items() if p["n"] % TRACK_EVERY == 0}


def processing(r: redis.Redis) -> dict[str, int]:
    """Every processing list of every queue (KEYS bus:{*}:processing:*) and its length."""
    return {k.decode(): int(r.llen(k)) for k in r.keys(ALL_PROCESSING)}  # type: ignore[union-attr]


class QueueState(TypedDict):
    pending: int
    delayed: int
    dead: int
    processing: dict[str, int]


def queue_state(r: redis.Redis) -> QueueState:
    """Where the queue's messages are: pending, delayed, dead, the processing lists."""
    return {
        "pending": int(read_balance(r, Q)["pending"]),  # every priority level
        "delayed": int(r.zcard(keys.delayed(Q))),
        "dead": int(r.llen(keys.dead(Q))),
        "processing": processing(r),
    }


def quiesce(r: redis.Redis, path: Path, ledger: Ledger, timeout_s: float = 30.0) -> Records:
    """Wait (bounded, without failing: the assertions then say what is wrong) until pending is
    empty, the one worker idle in its pop, every accepted id handled, and no record came for
    1 s. The records."""
    deadline = time.monotonic() + timeout_s
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        records = read_records(path)
        if len(records) != seen:
            seen, quiet_since = len(records), time.monotonic()
        done = (
            read_balance(r, Q)["pending"] == 0
            and workers_idle(r, 1)
            and not set(ledger.accepted) - handled_ids(records)
        )
        if done and time.monotonic() - quiet_since >= 1.0:
            return records
        time.sleep(0.05)
    return read_records(path)


def nopermission_lines(server: AclRedis) -> list[str]:
    """The lines of the Redis log (both runs) with a NOPERM: an AOF command refused on load."""
    log = (server.workdir / "redis.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "NOPERM" in line]


@pytest.mark.parametrize("concurrency", [1, 8])
def test_restart_with_the_stacks_acl_and_aof_replays_every_transaction(
    tmp_path: Path, spawn: Callable[..., Proc], concurrency: int
) -> None:
    """The stack's ACL file and AOF; a worker (bus-worker) handling a backlog the producer
    (bus-web) keeps growing; Redis stopped by SIGTERM mid-load and started again, the pushes
    going on. Every accepted message is handled, duplicates at most what the worker held
    (one slot: the batch in flight; eight, the default: its slots and what it claimed ahead).
    Then the worker stops, Redis is restarted once more and a new worker (another name, as
    after `make run` again) starts: the AOF gives back exactly the drained state, so nothing
    is pending, stranded in a processing list, or handled again."""
    assert STACK_FSYNC == ["everysec"], STACK_FSYNC
    acl_dir = tmp_path / "acl"
    server = AclRedis(tmp_path / "redis", acl_dir, generate(acl_dir), "--appendfsync",
                      STACK_FSYNC[0], appendonly=True)  # fmt: skip
    server.start()
    try:
        r = server.client()
        path = tmp_path / "records.jsonl"
        worker = start_workers(spawn, r, server.url_for("worker"), "w1", handler=HANDLER,
                               TEST_BUS_HANDLER_SLEEP_S=slower(concurrency),
                               BUS_CONCURRENCY=str(concurrency))  # fmt: skip
        ledger = MixedLedger(server)

        # Phase 1: Redis stopped (SIGTERM) and started again under load.
        at_stop: list[QueueState] = []
        acl_logs: list[object] = []
        times: dict[str, float] = {}

        def restart() -> None:
            times["down"] = time.monotonic()
            server.stop()
            server.start()
            times["up"] = time.monotonic()

        restarter = threading.Thread(target=restart, daemon=True)
        after = 0
        while after < AFTER_RESTART:
            ledger.try_push(ledger.payload())
            if not at_stop:
                time.sleep(0.002)  # about 400 a second, faster than the worker handles them
                if (ledger.n % 10 == 0 and r.llen(PENDING) >= BACKLOG_AT_STOP
                        and len(read_records(path)) >= HANDLED_BEFORE_STOP):  # fmt: skip
                    at_stop.append(queue_state(r))
                    acl_logs.extend(r.acl_log())
                    restarter.start()
                assert ledger.n < 20_000, "the worker never handled enough with a backlog"
            elif restarter.is_alive():
                time.sleep(0.005)  # Redis is down or loading: a push every 5 ms meanwhile
            else:
                after += 1
                time.sleep(0.001)
        restarter.join(30)
        assert not restarter.is_alive(), "Redis did not come back"
        retried = ledger.retry_refused()
        r = server.client()
        records = quiesce(r, path, ledger)
        phase1 = account(records, ledger)
        drained = queue_state(r)
        acl_logs.extend(r.acl_log())

        # Phase 2: the worker leaves (it settles what it holds), Redis restarts on its AOF,
        # a worker of another name starts: the state Redis had is the state it comes back with.
        assert worker["w1"].stop() == 0, worker["w1"].log()
        left = queue_state(r)
        server.stop()
        server.start()
        r = server.client()
        replayed = queue_state(r)
        start_workers(spawn, r, server.url_for("worker"), "w2", handler=HANDLER,
                      TEST_BUS_HANDLER_SLEEP_S=HANDLER_S)  # fmt: skip
        records = quiesce(r, path, ledger)
        acc = account(records, ledger)
        final = queue_state(r)
        stranded = sum(final["processing"].values())
        states = {i: r.hget(keys.record(Q, i), "state") for i in ledger.tracked_ids()}
        not_handled = {i: s for i, s in states.items() if s != b"handled"}
        noperm = nopermission_lines(server)
        print(
            f"\n[fault] Redis restart with the stack's ACL file and AOF ({STACK_FSYNC[0]}): "
            f"accepted {len(ledger.accepted)}, lost {len(acc.lost)}, duplicates "
            f"{acc.n_duplicates} ({phase1.n_duplicates} before the 2nd restart), stranded "
            f"in processing lists {stranded}; after the 2nd restart: pending "
            f"{replayed['pending']}, in processing lists "
            f"{sum(replayed['processing'].values())}; tracked records not 'handled' "
            f"{len(not_handled)} of {len(states)}, NOPERM log lines {len(noperm)}; at the stop: "
            f"backlog "
            f"{at_stop[0]['pending']}, in flight {sum(at_stop[0]['processing'].values())}; "
            f"downtime {times['up'] - times['down']:.2f}s, push raised {len(ledger.raised)} "
            f"(retried {retried}, late {len(acc.late)})"
        )
        assert not acc.phantoms, f"handled, never pushed: {sorted(acc.phantoms)[:3]}"
        assert not acc.lost, f"{len(acc.lost)} accepted, never handled: {sorted(acc.lost)[:3]}"
        held = BATCH_SIZE if concurrency == 1 else concurrency + AHEAD_BATCHES * BATCH_SIZE
        assert phase1.n_duplicates <= held, (
            f"{phase1.n_duplicates} handled twice across the restart; bound {held}, what the "
            f"worker held at the stop"
        )
        assert acc.n_duplicates == phase1.n_duplicates, (
            f"{acc.n_duplicates - phase1.n_duplicates} handled again after the worker left "
            f"and Redis restarted ({replayed['pending']} pending after the restart)"
        )
        assert drained == left == replayed == final, (drained, left, replayed, final)
        assert final == {"pending": 0, "delayed": 0, "dead": 0, "processing": {}}, final
        assert r.keys(ALL_PROCESSING) == []
        assert states and not not_handled, f"tracked records: {list(not_handled.items())[:3]}"
        assert not noperm, f"AOF commands refused on load: {noperm[:2]}"
        assert acl_logs == [], f"commands refused (ACL LOG): {acl_logs[:2]}"
        assert len(ledger.accepted) == ledger.n >= HANDLED_BEFORE_STOP + AFTER_RESTART
    finally:
        server.kill()
