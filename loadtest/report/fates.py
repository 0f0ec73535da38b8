"""The outcome of each message by the fate its payload asked of the handler (none, ``hang``,
``die``: see :mod:`loadtest.ledger.handlers`), and whether each duplicate is one at-least-once
explains.

Dead letters are told apart by their reason: ``timed out`` (a handler past its time limit, on
its last attempt), ``crashed`` (the worker process stopped while the handler ran, on the last of
``BUS_MAX_ATTEMPTS``: the reason written by the recovery, the reaper's or the next process's),
anything else as ``other``.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

NONE = "none"  # the messages handled normally
FATES = (NONE, "hang", "die")
EXPECTED = {"hang": "timed out", "die": "crashed"}  # the dead-letter reason each fate must end in


def reason_class(reason: str) -> str:
    """``timed out``, ``crashed`` or ``other``: what a dead letter's reason says."""
    if "timed out" in reason:
        return "timed out"
    if "stopped before settling" in reason and "BUS_MAX_ATTEMPTS" in reason:
        return "crashed"
    return "other"


def outcomes(
    sent: list[dict[str, Any]],
    acc: set[str],
    delivered: set[str],
    dead: dict[str, str],
    stranded: set[str],
) -> dict[str, dict[str, Any]]:
    """Per fate: accepted, handled, dead-lettered by reason class, stranded, lost; and one
    reason of each class, as Redis kept it."""
    fate_of = {s["lid"]: s.get("fate") or NONE for s in sent}
    out = {}
    for fate in FATES:
        lids = {lid for lid in acc if fate_of.get(lid) == fate}
        if not lids and fate != NONE:
            continue
        dead_here = {lid: dead[lid] for lid in lids - delivered if lid in dead}
        classes = Counter(reason_class(r) for r in dead_here.values())
        examples: dict[str, str] = {}
        for reason in dead_here.values():
            examples.setdefault(reason_class(reason), reason[:300])
        handled = len(lids & delivered)
        left = len(lids & stranded - delivered - set(dead_here))
        out[fate] = {
            "accepted": len(lids),
            "handled": handled,
            "dead_lettered": dict(sorted(classes.items())),
            "stranded": left,
            "lost": len(lids) - handled - len(dead_here) - left,
            "reasons": dict(sorted(examples.items())),
        }
    return out


def expected_ends(fates: dict[str, dict[str, Any]], fate: str) -> tuple[int, int]:
    """(how many messages of ``fate`` ended dead-lettered for the reason their fate gives,
    how many were accepted)."""
    f = fates.get(fate)
    if not f:
        return 0, 0
    return f["dead_lettered"].get(EXPECTED[fate], 0), f["accepted"]


def explained_duplicates(attempts: dict[str, list[tuple[float, int | None]]]) -> tuple[int, int]:
    """(extra deliveries, those at-least-once explains), from each lid's (time, attempt) of
    every delivery. A repeat is explained when it carries a higher attempt than the delivery
    before it: the message went back counted as a new attempt, which happens to a message
    whose handler had finished only when its worker process ended before settling it (a crash,
    a kill, a recycle: the recovery counts an attempt for everything in hand)."""
    extra = explained = 0
    for seen in attempts.values():
        if len(seen) < 2:
            continue
        ordered = sorted(seen, key=lambda ta: ta[0])
        for (_, before), (_, after) in pairwise(ordered):
            extra += 1
            if before is not None and after is not None and after > before:
                explained += 1
    return extra, explained
