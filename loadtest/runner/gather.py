"""What the runner gathers once the traffic is over: the drain, the consumers that died, what
Redis still holds, every consumer's last counters, locust's own figures."""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from loadtest import baseline
from loadtest.ledger import records
from loadtest.runner import faults
from loadtest.runner.stack import Stack
from producer import decode, keys

SETTLE_S = 0.3  # the drain is over when nothing moved for this long


def drain(
    stack: Stack,
    tails: dict[str, records.Tail],
    quick: bool,
    waiting_now: Callable[[int], None],
    bound_s: float = 0.0,
) -> float:
    """Wait until the lists are empty (or have no live consumer) and no consumer handled
    anything for a while; bounded (by ``bound_s`` if given, else by the suite's bound)."""
    r = stack.admin()
    deadline = time.monotonic() + (bound_s or (8.0 if quick else 15.0))
    last_total, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        for t in tails.values():
            t.poll()
        total = sum(len(t.lines) for t in tails.values())
        if total != last_total:
            last_total, quiet_since = total, time.monotonic()
        waiting = _waiting(stack, r)
        waiting_now(waiting)
        if waiting == 0 and time.monotonic() - quiet_since >= SETTLE_S:
            break
        time.sleep(0.1)
    return time.time()


def _waiting(stack: Stack, r: redis.Redis) -> int:
    """Messages in lists that a live consumer could still take."""
    n = 0
    for queue in {c.dest for c in stack.consumers if c.sys == "bus" and c.mode == "prodcons"}:
        n += int(r.llen(keys.pending(queue)))
        for key in r.scan_iter(match=keys.processing_prefix(queue) + "*"):
            n += int(r.llen(key))
    if any(c.proc.alive() for c in stack.consumers if c.sys == "baseline" and c.mode == "prodcons"):
        n += int(r.llen(baseline.QUEUE))
    return n


def exits(stack: Stack) -> dict[str, tuple[float | None, int, str]]:
    """Consumers that ended before the runner stopped them (a crash, or the fault's kill)."""
    out = {}
    for c in stack.consumers:
        if not c.proc.alive():
            code = c.proc.popen.returncode
            error = (
                "killed with SIGKILL by the fault"
                if c.proc.stopping
                else c.proc.last_error() or "no error printed"
            )
            out[c.who] = (c.proc.exited_at, code, error)
    return out


def read_redis(stack: Stack) -> tuple[set[str], dict[str, str], dict[str, dict[str, int]]]:
    """Lids still in lists, lids dead-lettered (with their reasons), and redis-bus consumers'
    final counters (a supervised worker's: its processes' summed)."""
    r = stack.admin()
    leftovers: set[str] = set()
    dead: dict[str, str] = {}
    for queue in {c.dest for c in stack.consumers if c.sys == "bus" and c.mode == "prodcons"}:
        lists = [keys.pending(queue), *r.scan_iter(match=keys.processing_prefix(queue) + "*")]
        for key in lists:
            for raw in r.lrange(key, 0, -1):
                leftovers.add(_lid_of_envelope(raw))
        for entry in r.lrange(keys.dead(queue), 0, -1):
            fields = json.loads(entry)
            dead[_lid_of_envelope(fields.get("raw", "").encode())] = str(fields.get("reason", ""))
    leftovers.update(records.lid_of(raw) or "" for raw in r.lrange(baseline.QUEUE, 0, -1))
    stats: dict[str, dict[str, int]] = {}
    for c in stack.consumers:
        if c.sys == "bus":
            role = "worker" if c.mode == "prodcons" else "subscriber"
            total: Counter[str] = Counter()
            for name in c.names:
                ident = f"{c.dest}:{name}" if role == "worker" else name
                raw_stats = r.hgetall(keys.stats(role, ident))
                total.update({_text(k): int(v) for k, v in raw_stats.items()
                              if _text(v).isdigit()})  # fmt: skip
            stats[c.who] = dict(total)
    dead.pop("", None)
    return leftovers - {""}, dead, stats


RESTART = re.compile(r"worker (\S+) \(pid \d+\) (?:ended \(([^)]*)\)|asks to be recycled)")


def restarts(stack: Stack) -> dict[str, dict[str, int]]:
    """Per supervised worker, its processes that ended and were started again, by how they
    ended ("exit code 1", "recycled"...), from its supervisor's log."""
    out: dict[str, dict[str, int]] = {}
    for c in stack.consumers:
        if not c.processes:
            continue
        log = stack.logs / f"{c.who}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        ends = Counter(m.group(2) or "recycled" for m in RESTART.finditer(text))
        out[c.who] = dict(sorted(ends.items()))
    return out


def _lid_of_envelope(raw: bytes | str) -> str:
    try:
        return records.lid_of(decode(raw).payload) or ""
    except ValueError:
        return ""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def all_lines(path: Path) -> list[dict[str, Any]]:
    return list(records.read(path)) if path.exists() else []


def _fault_note(w: faults.Window) -> str:
    """The fault's details in a sentence, for the report."""
    d = w.detail
    if "killed" in d and "in_hand" in d:
        fates = []
        for who in d["killed"]:
            held, deliveries = d["in_hand"].get(who), d.get("in_hand_deliveries", {}).get(who)
            if held is None:
                fates.append(f"{who} (holding nothing)")
            else:
                fate = "then handled by another worker" if deliveries else "lost with it"
                fates.append(f"{who} (the message in its hands: {fate})")
        return "killed " + ", ".join(fates)
    if "killed" in d:
        return f"{d['killed']} connections closed"
    if "promoted_s" in d:
        return (
            f"the replica on port {d['new_primary']} was promoted {d['promoted_s']:.2f} s after "
            f"the command; every node agreed after {d['agreed_s']:.2f} s"
        )
    return ""


def fault_entry(w: faults.Window, t0: float) -> dict[str, Any]:
    return {
        "kind": w.kind,
        "label": w.label,
        "start_s": round(w.start - t0, 2),
        "end_s": round(w.end - t0, 2),
        **({"detail": w.detail, "note": _fault_note(w)} if w.detail else {}),
    }


def locust_figures(out: Path, name: str) -> dict[str, Any]:
    """Requests, failures and rate from locust's own CSV (its Aggregated row)."""
    figures: dict[str, Any] = {"html": f"locust/{name}.html"}
    path = out / "locust" / f"{name}_stats.csv"
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("Name") == "Aggregated":
                    figures.update(
                        requests=int(row["Request Count"]),
                        failures=int(row["Failure Count"]),
                        rps=round(float(row["Requests/s"]), 1),
                    )
    except (OSError, KeyError, ValueError):
        figures.update(requests=None, failures=None, rps=None)
    return figures
