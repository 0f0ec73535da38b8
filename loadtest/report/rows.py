"""How a row of the accounting reads: its fields in a fixed order (:func:`ordered`), and what a
reader should know about it, in sentences (:func:`notes`)."""

from __future__ import annotations

from typing import Any

FIELDS = (
    "system",
    "mode",
    "dest",
    "consumers",
    "sent",
    "accepted",
    "rejected",
    "unknown",
    "http_errors",
    "accepted_per_s",
    "http_ms",
    "e2e_ms",
    "expected",
    "delivered",
    "lost",
    "duplicated",
    "dead_lettered",
    "stranded",
    "unknown_delivered",
    "phantom",
    "resume_s",
    "stall_s",
    "missed",
    "counted_lost",
    "reconnects",
    "exits",
)


def ordered(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with :data:`FIELDS` first, in that order, then the rest."""
    out = {k: row[k] for k in FIELDS}
    out.update((k, v) for k, v in row.items() if k not in out)
    out.setdefault("complete", True)
    out.setdefault("notes", [])
    return out


def notes(row: dict[str, Any], orphans: int) -> list[str]:
    """What a reader should know about a row, in sentences."""
    notes = []
    n = row["accepted"]
    if row["mode"] == "prodcons":
        if row["lost"]:
            notes.append(
                f"{row['lost']:,} of {n:,} accepted messages were lost: gone from "
                "Redis and never handled."
            )
        if row["stranded"]:
            notes.append(
                f"{row['stranded']:,} accepted messages were still in Redis when the "
                "drain ended: no consumer took them."
            )
        if row["duplicated"]:
            notes.append(
                f"{row['duplicated']:,} extra deliveries: messages handled more than once."
            )
    for p in row.get("per_consumer", []):
        counted = (
            "" if p["counted_lost"] is None else f", its own count of lost: {p['counted_lost']:,}"
        )
        slow = " (slow)" if p["slow"] else ""
        notes.append(
            f"{p['who']}{slow} received {p['received']:,} of {n:,} accepted, missed "
            f"{p['missed']:,} sent{counted}."
        )
    if row["unknown"]:
        notes.append(
            f"{row['unknown']:,} sends had an unknown outcome; "
            f"{row['unknown_delivered']:,} deliveries of them were seen."
        )
    if row["rejected"]:
        notes.append(
            f"{row['rejected']:,} sends were refused (the producer said so: safe to retry)."
        )
    if row["phantom"]:
        notes.append(f"{row['phantom']:,} messages the producer said it refused were delivered.")
    reported = row.get("receivers_reported")
    if reported is not None and reported > row["delivered"] + row["unknown_delivered"]:
        notes.append(
            f"PUBLISH answered {reported:,} receivers in all, but subscribers handled "
            f"{row['delivered']:,}: Redis counts a subscriber whose buffer took it."
        )
    notes += _fate_notes(row)
    for e in row["exits"]:
        at = "" if e["at_s"] is None else f" at {e['at_s']:.1f} s"
        notes.append(f"{e['who']} exited{at} (code {e['code']}): {e['error']}")
    if orphans:
        notes.append(f"{orphans:,} deliveries carried an id no producer recorded.")
    return notes


FATE_WORDS = {"none": "Not marked", "hang": "Marked to hang", "die": "Marked to end its process"}


def _fate_notes(row: dict[str, Any]) -> list[str]:
    """What became of the messages by the fate their payload asked (see
    :mod:`loadtest.report.fates`), and of the duplicates."""
    out = []
    for fate, f in row.get("fates", {}).items():
        dead = ", ".join(f"{why}: {n:,}" for why, n in f["dead_lettered"].items()) or "none"
        out.append(
            f"{FATE_WORDS.get(fate, fate)}: {f['accepted']:,} accepted, {f['handled']:,} handled, "
            f"dead-lettered {dead}, {f['stranded']:,} stranded, {f['lost']:,} lost."
        )
    met = row.get("handlers_met")
    if met:
        out.append(
            f"Handlers that hung: {met.get('hang', 0):,} attempts; handlers that ended their "
            f"process: {met.get('die', 0):,}."
        )
    if "duplicates_explained" in row and row["duplicated"]:
        out.append(
            f"{row['duplicates_explained']:,} of the {row['duplicated']:,} extra deliveries came "
            "with a higher attempt: messages in hand when a worker process ended."
        )
    return out
