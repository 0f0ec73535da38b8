"""What a worker's handlers hold now, and whether it is stuck: judged here for every reader.

A worker writes into its stats hash (``Stats.set_state``) every ``BUS_STATS_INTERVAL_S``:
``slots`` (handlers it may run at once for its queue), ``busy`` (messages in their hands now),
``oldest_started_ms`` (Unix ms at which the oldest of them started; 0: none),
``oldest_limit_ms`` (that message's time limit; 0: none) and ``abandoned`` (handlers given up on
at their time limit that still run: their messages were settled as failed attempts, their
threads could not be interrupted). A worker that does not write them (an older one) has no
in-hand view at all.

A worker is ``overdue`` when it holds an abandoned handler, or when its oldest message in hand is
older than its limit by more than the worker's stats interval: the hash may be that old, and by
then a worker that gave up on the message has written so (``abandoned``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FIELDS = ("slots", "busy", "oldest_started_ms", "oldest_limit_ms", "abandoned")


def _int(p: dict[str, Any], field: str) -> int:
    value = p.get(field, 0)
    return max(0, value) if isinstance(value, int) else 0  # garbage in a hash reads as none


def in_hand(p: dict[str, Any], now: int) -> dict[str, Any]:
    """The in-hand view of a worker's stats row at ``now`` (Unix ms): ``slots``, ``busy``,
    ``oldest_age_ms`` (0: none), ``oldest_limit_ms``, ``overdue``, ``abandoned``; empty when
    the worker does not write these fields."""
    if "slots" not in p:
        return {}
    started, limit = _int(p, "oldest_started_ms"), _int(p, "oldest_limit_ms")
    age = max(0, now - started) if started else 0
    abandoned = _int(p, "abandoned")
    late = bool(started and limit and age > limit + _int(p, "interval_ms"))
    return {
        "slots": _int(p, "slots"),
        "busy": _int(p, "busy"),
        "oldest_age_ms": age,
        "oldest_limit_ms": limit if started else 0,
        "overdue": abandoned > 0 or late,
        "abandoned": abandoned,
    }


def queue_sums(workers: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``busy`` and ``slots`` summed over the workers that report them (empty: none does)."""
    rows = [w for w in workers if "slots" in w]
    if not rows:
        return {}
    return {"busy": sum(w["busy"] for w in rows), "slots": sum(w["slots"] for w in rows)}
