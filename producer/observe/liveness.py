"""Who is alive, deaf or dead: the rows of workers, subscribers and producers of the overview,
judged once here for every reader (``/api/stats``, the dashboard, ``/metrics``, ``status``).

- a worker is ``alive`` while its heartbeat (``bus:{q}:consumers``, Redis's clock) is younger
  than its ``BUS_HEARTBEAT_TTL_S`` (the one it wrote in its stats; the reader's own setting for
  a worker whose stats are gone); ``stopped`` when it said goodbye; else ``dead``;
- a subscriber is ``listening``, ``deaf`` (it knows its link is down, since
  ``deaf_since_ms``), ``silent`` (its stats stopped coming: frozen, killed, or cut off) or
  ``stopped``. It is deaf past its deadline when deaf or silent for longer than
  ``deaf_after_ms``, the time its own settings allow a dead link to go unnoticed.

What a live worker's handlers hold, and whether it is stuck (``overdue``), is judged in
:mod:`producer.observe.inhand`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from producer.observe.inhand import in_hand
from producer.settings import Settings

PRODUCER_ROLES = ("web", "locust")
WORKER_COUNTERS = ("handled", "failed", "retried", "dead_lettered", "recovered", "timed_out",
                   "reconnects")  # fmt: skip
SUBSCRIBER_COUNTERS = ("received", "handled", "lost", "duplicates", "out_of_order", "failed",
                       "reconnects", "deadline_misses")  # fmt: skip
PRODUCER_COUNTERS = ("pushed", "published", "published_zero", "unconfirmed", "refused_full",
                     "rejected", "unavailable")  # fmt: skip


def _pick(p: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The counters ``names`` of a process's stats row (0 when it has not written them)."""
    return {c: p.get(c, 0) for c in names}


def worker_rows(
    processes: list[dict[str, Any]], queues: dict[str, Any], settings: Settings, now: int
) -> list[dict[str, Any]]:
    """One row per worker a heartbeat or a stats hash knows of; a live one's in-hand view at
    ``now`` (Unix ms) too, when it writes one (a dead one's would only grow stale)."""
    beats = {(q, c["name"]): c for q, v in queues.items() for c in v["consumers"]}
    stats = {
        (p.get("queue", ""), p.get("name", "")): p for p in processes if p.get("role") == "worker"
    }
    rows = []
    for q, name in sorted(set(beats) | set(stats)):
        beat, p = beats.get((q, name)), stats.get((q, name), {})
        # The worker's own TTL when it said it (the reaper of its fleet uses that one).
        ttl_ms = int(p.get("heartbeat_ttl_ms") or settings.heartbeat_ttl_s * 1000)
        if beat is not None:
            beat["alive"] = beat["heartbeat_age_ms"] <= ttl_ms
        if beat is not None and beat["alive"]:
            state = "alive"
        elif p.get("stopped_ms") and beat is None:
            state = "stopped"
        else:
            state = "dead"
        rows.append(
            {
                "queue": q,
                "name": name,
                "delivery": p.get("delivery"),
                "state": state,
                "alive": state == "alive",
                "heartbeat_age_ms": beat["heartbeat_age_ms"] if beat else None,
                "heartbeat_ttl_ms": ttl_ms,
                "in_flight": beat["in_flight"] if beat else 0,
                "handled_per_s": p.get("handled_per_s", 0.0) if state == "alive" else 0.0,
                "stats_age_ms": p.get("age_ms"),
                "pid": p.get("pid"),
                "host": p.get("host"),
                **_pick(p, WORKER_COUNTERS),
                **(in_hand(p, now) if state == "alive" else {}),
            }
        )
    return rows


def subscriber_rows(processes: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
    rows = []
    for p in processes:
        if p.get("role") != "subscriber":
            continue
        interval = int(p.get("interval_ms") or 500)
        deaf_after = int(p.get("deaf_after_ms") or 0)
        deaf_since = int(p.get("deaf_since_ms") or 0)
        if p.get("stopped_ms"):
            state, deaf_for = "stopped", 0
        elif p["age_ms"] > 3 * interval + 1000:  # its stats stopped coming
            state, deaf_for = "silent", p["age_ms"]
        elif deaf_since:
            state, deaf_for = "deaf", max(0, now - deaf_since)
        else:
            state, deaf_for = "listening", 0
        rows.append(
            {
                "name": p.get("name", p.get("id")),
                "channels": [c for c in p.get("channels", "").split(",") if c],
                "patterns": [c for c in p.get("patterns", "").split(",") if c],
                "state": state,
                "deaf": state in ("deaf", "silent"),
                "deaf_for_ms": deaf_for,
                "deaf_after_ms": deaf_after,
                "overdue": state in ("deaf", "silent") and deaf_for > deaf_after,
                "received_per_s": p.get("received_per_s", 0.0) if state == "listening" else 0.0,
                "stats_age_ms": p["age_ms"],
                "pid": p.get("pid"),
                "host": p.get("host"),
                **_pick(p, SUBSCRIBER_COUNTERS),
            }
        )
    return rows


def producer_rows(processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per producer process (web, locust)."""
    return [_producer(p) for p in processes if p.get("role") in PRODUCER_ROLES]


def _producer(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": p.get("role"),
        "name": p.get("name", p.get("id")),
        "stats_age_ms": p["age_ms"],
        **_pick(p, PRODUCER_COUNTERS),
        "pushed_per_s": p.get("pushed_per_s", 0.0),
        "published_per_s": p.get("published_per_s", 0.0),
    }
