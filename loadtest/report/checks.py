"""What a run must show for redis-bus to keep its word, checked on the summary.

Each check names its scenario and says what it found. The baseline is measured, not judged,
except that its accounting must be complete: otherwise the comparison means nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadtest.report import fates

INHAND_SLACK_MS = 1000  # past the time limit: the limit is looked at every 0.1 s, on a busy host
Check = Callable[[str, bool, str], None]


def evaluate(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check of every scenario, in order."""
    out: list[dict[str, Any]] = []
    for scn in summary["scenarios"]:
        name = scn["name"]

        def check(what: str, ok: bool, detail: str, scn_name: str = name) -> None:
            out.append({"scenario": scn_name, "name": what, "ok": bool(ok), "detail": detail})

        rows = scn["rows"]
        for row in rows:
            label = f"{row['system']} {row['mode']}"
            check(
                f"{label}: accounting complete",
                row["complete"],
                "every accepted message is delivered, lost, stranded or dead-lettered, and "
                "every delivery matches a send"
                if row["complete"]
                else "; ".join(row["notes"]),
            )
            if row["system"] == "baseline":
                continue
            check(
                f"{label}: nothing refused was delivered",
                row["phantom"] == 0,
                f"{row['phantom']} phantom deliveries",
            )
            if row["mode"] == "prodcons" and row["system"] != "redis-bus at-most-once":
                check(
                    f"{label}: at-least-once lost nothing",
                    row["lost"] == 0 and row["stranded"] == 0,
                    f"{row['accepted']:,} accepted, {row['delivered']:,} delivered, "
                    f"{row['lost']} lost, {row['stranded']} stranded",
                )
            if row["mode"] == "pubsub":
                for p in row.get("per_consumer", []):
                    check(
                        f"{label}: {p['who']} counted its losses exactly",
                        p["counted_lost"] == p["missed"],
                        f"counted {p['counted_lost']}, missed {p['missed']} of "
                        f"{row['sent']:,} sent",
                    )
                check(
                    f"{label}: never delivered twice",
                    row["duplicated"] == 0,
                    f"{row['duplicated']} duplicates",
                )
            if "fates" in row:
                _fate_checks(row, label, check)
            if name == "idle-timeout":
                check(
                    f"{label}: no HTTP error across idle gaps",
                    row["http_errors"] == 0,
                    f"{row['http_errors']} HTTP errors in {row['sent']:,} requests",
                )
        if "inhand" in scn:
            _inhand_check(scn, rows, check)
        if not scn.get("baseline", True):
            continue
        systems = {row["system"] for row in rows}
        check(
            "the baseline ran beside redis-bus",
            "baseline" in systems
            and any(r["system"] == "baseline" and r["sent"] > 0 for r in rows),
            ", ".join(sorted(systems)),
        )
    return out


def _fate_checks(row: dict[str, Any], label: str, check: Check) -> None:
    """Every poisoned message ended dead-lettered for its reason; every duplicate explained."""
    for fate, words in (("hang", "hang"), ("die", "end its process")):
        ended, accepted = fates.expected_ends(row["fates"], fate)
        want = fates.EXPECTED[fate]
        check(
            f"{label}: every message marked to {words} ended dead-lettered ({want})",
            ended == accepted,
            _fate_detail(row["fates"].get(fate), ended, want),
        )
    check(
        f"{label}: every duplicate was in hand when a worker process ended",
        row["duplicates_explained"] == row["duplicated"],
        f"{row['duplicated']} extra deliveries, {row['duplicates_explained']} of them with a "
        "higher attempt than the one before",
    )


def _inhand_check(scn: dict[str, Any], rows: list[dict[str, Any]], check: Check) -> None:
    """The oldest message in hand never outlived its time limit; every process a handler ended
    was seen ending by its supervisor."""
    seen = scn["inhand"]
    limit, oldest = seen["limit_ms"], seen["max_age_ms"]
    check(
        "no message stayed in a handler's hands past its time limit",
        seen["samples"] > 0 and (not limit or oldest <= limit + INHAND_SLACK_MS),
        f"oldest in hand {oldest / 1000:.2f} s, limit {limit / 1000:g} s, "
        f"{seen['samples']} samples",
    )
    if "restarts" in scn:
        died = sum(r.get("handlers_met", {}).get("die", 0) for r in rows)
        ended = sum(n.get("exit code 1", 0) for n in scn["restarts"].values())
        check(
            "every process a handler ended was restarted by its supervisor",
            died == ended,
            f"{died} handlers ended their process; the supervisors restarted {ended} that "
            "exited with code 1",
        )


def _fate_detail(f: dict[str, Any] | None, ended: int, want: str) -> str:
    if not f:
        return "no message was marked so"
    others = sum(n for why, n in f["dead_lettered"].items() if why != want)
    return (
        f"{ended} of {f['accepted']} dead-lettered {want}; {others} for another reason, "
        f"{f['handled']} handled, {f['stranded']} stranded, {f['lost']} lost"
    )
