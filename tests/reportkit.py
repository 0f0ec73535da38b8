"""The load-test report's tests' run: a made-up summary and series of a run (two scenarios, a
Redis restart and a kill -9), written where the report reads them, and the summary table read
back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

BIN_S = 0.5
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(system: str, mode: str, consumers: int = 1, **fields: Any) -> dict[str, Any]:
    """A summary row of a calm run (everything delivered once), changed by ``fields``."""
    accepted = fields.get("accepted", 6000)
    bus = system.startswith("redis-bus")
    out: dict[str, Any] = {
        "system": system, "mode": mode, "dest": "default", "consumers": consumers,
        "sent": accepted, "accepted": accepted, "rejected": 0, "unknown": 0, "http_errors": 0,
        "accepted_per_s": accepted / 30, "http_ms": {"p50": 2.1, "p95": 3.9, "p99": 4.31, "max": 9},
        "e2e_ms": {"p50": 1.2, "p95": 2.5, "p99": 3.3, "max": 7},
        "expected": accepted * (consumers if mode == "pubsub" else 1),
        "delivered": accepted * (consumers if mode == "pubsub" else 1),
        "lost": 0, "duplicated": 0, "dead_lettered": 0, "stranded": 0, "unknown_delivered": 0,
        "phantom": 0, "resume_s": None, "stall_s": None,
        "missed": 0 if mode == "pubsub" else None,
        "counted_lost": 0 if mode == "pubsub" and bus else None,
        "reconnects": 0 if bus else None, "exits": [], "complete": True, "notes": [],
    }  # fmt: skip
    out.update(fields)
    return out


def scenario(name: str, title: str, faults: list[dict[str, Any]], rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    return {
        "name": name, "title": title, "description": f"What {name} does to both systems.",
        "modes": modes, "shape": "steady", "traffic_s": 30.0, "elapsed_s": 38.5,
        "faults": faults,
        "locust": {"html": f"locust/{name}.html", "requests": 12345, "failures": 3, "rps": 411.5},
        "rows": rows,
    }  # fmt: skip


RESTART = {"kind": "restart", "label": "Redis restarted", "start_s": 6.7, "end_s": 7.4}
KILL = {"kind": "kill", "label": "worker killed (kill -9)", "start_s": 10.0, "end_s": 10.0}


def make_summary() -> dict[str, Any]:
    """Three scenarios: one calm, a restart the baseline worker dies of, a worker kill."""
    error = "redis.exceptions.ConnectionError: Error 111 connecting. Connection refused."
    died = {"who": "baseline-worker-1", "at_s": 6.9, "code": 1, "error": error}
    scenarios = [
        scenario("mixed", "Both modes, no faults", [], [
            row("redis-bus", "prodcons"),
            row("baseline", "prodcons",
                http_ms={"p50": 30.2, "p95": 180.0, "p99": 812.6, "max": 990}),
            row("redis-bus", "pubsub", 2),
            row("baseline", "pubsub", 2, e2e_ms=None),
        ]),
        scenario("restart", "Redis restart (AOF on)", [RESTART], [
            row("redis-bus", "prodcons", accepted=7900, rejected=100, sent=8000, resume_s=0.004,
                stall_s=0.7, reconnects=3),
            row("baseline", "prodcons", accepted=8000, delivered=3120, lost=4, stranded=4876,
                http_errors=212, accepted_per_s=266.67, e2e_ms={"p50": 3, "p95": 9, "p99": 1234.4,
                "max": 2000}, http_ms={"p50": 0.3, "p95": 0.5, "p99": 0.87, "max": 5},
                stall_s=23.1, complete=False, exits=[died],
                notes=["4 of 8,000 accepted messages were lost.",
                       f"baseline-worker-1 exited at 6.9 s (code 1): {error}"]),
            row("redis-bus", "pubsub", 2, delivered=11986, lost=14, missed=14, counted_lost=14,
                resume_s=0.021, reconnects=2,
                notes=["7 messages per subscriber lost while Redis was down, counted."]),
            row("baseline", "pubsub", 2, delivered=11176, lost=824, missed=824, unknown=40,
                unknown_delivered=12, phantom=2,
                notes=["40 sends had an unknown outcome; 12 deliveries of them were seen."]),
        ]),
        scenario("worker-crash", "A worker killed mid-message", [KILL], [
            row("redis-bus", "prodcons", 2, duplicated=1, resume_s=2.9),
            row("redis-bus at-most-once", "prodcons", 2, delivered=5999, lost=1, resume_s=0.008),
            row("baseline", "prodcons", 2, delivered=5999, lost=1, resume_s=0.01,
                exits=[{"who": "baseline-worker-2", "at_s": None, "code": -9, "error": ""}]),
        ]),
    ]  # fmt: skip
    checks = [
        {"scenario": "mixed", "name": "redis-bus loses nothing", "ok": True,
         "detail": "0 of 24,000"},
        {"scenario": "restart", "name": "pub/sub loss counted", "ok": True, "detail": "14 = 14"},
        {"scenario": "worker-crash", "name": "redis-bus resumes within 5 s", "ok": False,
         "detail": "resumed after 6.20 s | bound 5 s"},
    ]  # fmt: skip
    return {
        "schema": 1, "command": "python -m loadtest run all --quick", "quick": True,
        "started": "2025-11-23T05:42:10Z", "wall_s": 372.4,
        "machine": {"cpus": 2, "python": "3.11.2", "redis_server": "7.0.15",
                    "redis_py": "8.0.1", "locust": "2.41.0"},
        "stack": {"web_workers": 4, "settings": {"BUS_BLOCK_TIMEOUT_S": "1",
                                                 "BUS_HEARTBEAT_TTL_S": "3"}},
        "ok": False, "checks": checks, "scenarios": scenarios,
    }  # fmt: skip


def make_series(summary: dict[str, Any]) -> dict[str, Any]:
    """Per-bin counts for every row: steady traffic, a dip and failures around each fault."""
    n = int(38.5 / BIN_S)
    t = [i * BIN_S for i in range(n)]
    out: dict[str, Any] = {}
    for sc in summary["scenarios"]:
        rows = {}
        for r in sc["rows"]:
            accepted = [100 if ti < 30 else 0 for ti in t]
            failed = [0] * n
            for f in sc["faults"]:
                for i, ti in enumerate(t):
                    if f["start_s"] <= ti <= f["end_s"] + BIN_S:
                        accepted[i], failed[i] = 20, 80
            delivered = [a * r["consumers"] if r["mode"] == "pubsub" else a for a in accepted]
            if r["exits"] and r["exits"][0]["at_s"]:  # nothing is delivered after the death
                delivered = [
                    0 if ti > r["exits"][0]["at_s"] else d
                    for ti, d in zip(t, delivered, strict=True)
                ]
            rows[f"{r['system']} {r['mode']}"] = {
                "system": r["system"], "mode": r["mode"], "consumers": r["consumers"],
                "accepted": accepted, "failed": failed, "delivered": delivered,
            }  # fmt: skip
        out[sc["name"]] = {"faults": sc["faults"], "t": t, "rows": rows}
    return {"bin_s": BIN_S, "scenarios": out}


def make_run(run_dir: Path, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run directory as the runner leaves it (worker-crash's locust report was not written)."""
    summary = summary or make_summary()
    (run_dir / "locust").mkdir(parents=True)
    for name in ("mixed", "restart"):
        (run_dir / "locust" / f"{name}.html").write_text("<html></html>")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "series.json").write_text(json.dumps(make_series(summary)))
    return summary


def table_rows(markdown: str) -> dict[tuple[str, str, str], list[str]]:
    """The summary table's data rows by (scenario, system, mode)."""
    start = markdown.index("| scenario | system | mode |")
    lines = markdown[start:].split("\n\n")[0].splitlines()[2:]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return {(c[0], c[1], c[2].split()[0]): c[3:] for c in cells}
