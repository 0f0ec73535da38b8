"""One-shot commands of ``python -m consumers``: worker --check, reaper, dead letters, and a
tracked message's record."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis

from consumers.lists import ORPHAN_PASSES, QueueOps
from producer import Settings, make_client
from producer import keys as bus_keys
from producer.errors import EXIT_OK, EXIT_UNHEALTHY
from producer.store.deadletters import DeadLetters
from producer.store.tracking import cancel, check_id, find_record

log = logging.getLogger("consumers")


def check_workers(settings: Settings, queues: list[str]) -> int:
    """Exit 0 only if every queue has a worker whose heartbeat is younger than the TTL."""
    client = make_client(settings, "admin", "check")
    seconds, micros = client.time()  # Redis's clock, as the heartbeats
    now = seconds * 1000 + micros // 1000
    cutoff = now - int(settings.heartbeat_ttl_s * 1000)
    healthy = True
    for q in queues:
        live: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
            bus_keys.consumers(q), f"({cutoff}", "+inf", withscores=True
        )
        if live:
            ages = ", ".join(f"{m.decode()} ({(now - s) / 1000:.1f}s)" for m, s in live)
            print(f"queue {q}: {len(live)} live worker(s): {ages}")
        else:
            print(
                f"queue {q}: no worker with a heartbeat in the last {settings.heartbeat_ttl_s:g}s"
            )
            healthy = False
    return EXIT_OK if healthy else EXIT_UNHEALTHY


def run_reaper(settings: Settings, queues: list[str], once: bool, stopping: threading.Event) -> int:
    """Requeue the in-flight messages of workers whose heartbeat expired; once or every
    ``reaper_interval_s`` until ``stopping`` is set."""
    client = make_client(settings, "admin", "reaper")
    ops = [QueueOps(client, q, settings.dead_max, settings.max_attempts) for q in queues]
    passes = 0
    while True:
        try:
            for op in ops:
                # Lists of unregistered workers too, on the first pass and every 12th after
                orphans = passes % ORPHAN_PASSES == 0
                reaped = op.reap(settings.heartbeat_ttl_s, orphans=orphans)
                for name, (requeued, dead) in reaped.items():
                    print(
                        f"queue {op.queue}: reaped {name}: requeued {requeued}, "
                        f"dead-lettered {dead}",
                        flush=True,
                    )
                if once and not reaped:
                    print(f"queue {op.queue}: no expired worker")
        except redis.RedisError as exc:
            if once:
                raise
            log.warning("reaper: %s; trying again in %gs", exc, settings.reaper_interval_s)
        passes += 1
        if once or stopping.wait(settings.reaper_interval_s):
            return EXIT_OK


def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    """``dead list|requeue|purge``."""
    dead = DeadLetters(make_client(settings, "admin", "dead"), args.queue)
    if args.action == "list":
        for entry in dead.entries(0, args.limit):
            print(json.dumps(_readable(entry), ensure_ascii=False))
        return EXIT_OK
    if args.action == "requeue":
        requeued, kept = dead.requeue(args.limit)
        print(f"queue {args.queue}: requeued {requeued}; kept {kept} that are not valid envelopes")
        return EXIT_OK
    total = dead.total()
    if not args.yes:
        print(
            f"queue {args.queue}: {total} dead letters; add --yes to delete them", file=sys.stderr
        )
        return EXIT_UNHEALTHY
    print(f"queue {args.queue}: purged {dead.purge()} dead letters")
    return EXIT_OK


def show_message(settings: Settings, msg_id: str, queues: list[str], as_json: bool,
                 wait_s: float | None) -> int:  # fmt: skip
    """``message ID``: print a tracked message's record; exit 1 when there is none (or, with
    ``wait_s``, when it is not handled or dead by then)."""
    bad = check_id(msg_id)
    if bad:
        print(f"python -m consumers message: {bad}", file=sys.stderr)
        return EXIT_UNHEALTHY
    client = make_client(settings, "admin", "message")
    deadline = time.monotonic() + (wait_s or 0)
    while True:
        record = find_record(client, queues, msg_id)
        done = record is not None and record["final"]
        if wait_s is None or done or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if record is None:
        where = ", ".join(queues)
        print(f"no record of message {msg_id!r} in queue(s) {where}: not tracked, unknown, "
              "or expired (BUS_RESULT_TTL_S after its last change)", file=sys.stderr)  # fmt: skip
        return EXIT_UNHEALTHY
    if as_json:
        print(json.dumps(record, ensure_ascii=False))
    else:
        for line in _record_lines(record):
            print(line)
    return EXIT_OK if wait_s is None or done else EXIT_UNHEALTHY


def cancel_message(settings: Settings, msg_id: str, queues: list[str], as_json: bool) -> int:
    """``message cancel ID``: cancel a tracked message; say what was done. Exit 1 when there is
    no record of it."""
    bad = check_id(msg_id)
    if bad:
        print(f"python -m consumers message: {bad}", file=sys.stderr)
        return EXIT_UNHEALTHY
    done = cancel(make_client(settings, "admin", "message"), queues, msg_id)
    if done is None:
        where = ", ".join(queues)
        print(f"no record of message {msg_id!r} in queue(s) {where}: only tracked messages can "
              "be cancelled, and records expire (BUS_RESULT_TTL_S)", file=sys.stderr)  # fmt: skip
        return EXIT_UNHEALTHY
    if as_json:
        print(json.dumps(done.answer(msg_id)))
    else:
        print(f"{msg_id} (queue {done.queue}, {done.state}): {done.outcome}: {done.meaning}")
    return EXIT_OK


def _record_lines(record: dict[str, Any]) -> list[str]:
    """``field: value`` lines, the state first, times as UTC and their age."""
    now = time.time() * 1000
    order = ["id", "queue", "state", "attempt", "worker", "progress", "progress_text", "error",
             "reason", "result", "result_error", "after", "waiting_for"]  # fmt: skip
    lines = []
    for key in order + sorted(k for k in record if k not in order):
        value = record.get(key)
        if value is None or key == "final":
            continue
        if key.endswith("_ms") and key != "expires_in_ms" and isinstance(value, int):
            at = datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")
            ago = (now - value) / 1000
            text = f"{at} ({'in ' if ago < 0 else ''}{abs(ago):.1f}s{'' if ago < 0 else ' ago'})"
        elif key == "result":
            text = json.dumps(value, ensure_ascii=False)
        elif key == "after" and isinstance(value, list):  # what it waits (waited) for
            shown = ", ".join(f"{p.get('id')} on {p.get('queue')}" for p in value[:5])
            text = f"{len(value)}: {shown}" + (", ..." if len(value) > 5 else "")
        else:
            text = str(value)
        lines.append(f"{key + ':':<15} {text}")
    return lines


def _readable(entry: dict[str, object]) -> dict[str, object]:
    out = dict(entry)
    at = entry.get("at")
    if isinstance(at, int):
        out["at"] = datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds")
    for field in ("raw", "raw_b64"):
        value = out.get(field)
        if isinstance(value, str) and len(value) > 500:
            out[field] = value[:500] + f"... ({len(value)} chars)"
    return out
