"""What a run must show for redis-bus to keep its word, checked on the summary.

Each check names its scenario and says what it found. The baseline is measured, not judged,
except that its accounting must be complete: otherwise the comparison means nothing.
"""

from __future__ import annotations

from typing import Any


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
            if name == "idle-timeout":
                check(
                    f"{label}: no HTTP error across idle gaps",
                    row["http_errors"] == 0,
                    f"{row['http_errors']} HTTP errors in {row['sent']:,} requests",
                )
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
