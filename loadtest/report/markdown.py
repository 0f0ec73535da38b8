"""Turn a load-test run directory (``summary.json``, ``series.json``) into ``report.md`` and plots.

``python -m loadtest.report DIR`` regenerates the report of a run. The runner calls
:func:`write_report` after a run and prints :func:`summary_table`; docs/load-tests.md includes it.
Every link in the report is relative: a run directory gets moved and committed as a sample.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from loadtest.report import comparison, fmt, plots, rundir
from loadtest.report import memory as memreport

REPORT, LATENCY_PNG, OUTCOMES_PNG = "report.md", "latency.png", "outcomes.png"
Row = dict[str, Any]


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and its PNG plots into ``run_dir``; return report.md's path."""
    run_dir = Path(run_dir)
    summary, series = rundir.load_run(run_dir)
    scenarios = summary["scenarios"]
    parts = [_header(summary), _checks(summary), "## Summary\n\n" + summary_table(summary)]
    # Calm: no fault, and no handler that hangs or ends its process (their latency is theirs).
    calm = [sc for sc in scenarios
            if not sc["faults"] and not any("fates" in r for r in sc["rows"])]  # fmt: skip
    # Each figure takes about half a second to render: one process per core draws them.
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=get_context("fork")) as pool:
        timelines = {
            sc["name"]: pool.submit(plots.timeline, run_dir / f"timeline-{sc['name']}.png", sc,
                                    series["scenarios"][sc["name"]], series["bin_s"])
            for sc in scenarios if sc["name"] in series["scenarios"]
        }  # fmt: skip
        memories = {
            sc["name"]: pool.submit(memreport.plot, run_dir / _memory_png(sc), sc,
                                    series["scenarios"][sc["name"]]["memory"])
            for sc in scenarios
            if "memory" in sc and "memory" in series["scenarios"].get(sc["name"], {})
        }  # fmt: skip
        outcomes = pool.submit(comparison.outcomes, run_dir / OUTCOMES_PNG, scenarios)
        latency = pool.submit(comparison.latency, run_dir / LATENCY_PNG, calm)
        for sc in scenarios:
            drawn = sc["name"] in timelines
            if drawn:
                timelines[sc["name"]].result()
            parts.append(_scenario(run_dir, sc, f"timeline-{sc['name']}.png" if drawn else None))
            if "memory" in sc:
                memory = memories.get(sc["name"])
                png = _memory_png(sc) if memory is not None and memory.result() else None
                parts.append(memreport.section(sc, png))
        compared, timed = outcomes.result(), latency.result()
    for name, drawn in ((OUTCOMES_PNG, compared), (LATENCY_PNG, timed)):
        if not drawn:  # a plot of an earlier report of this directory would mislead
            (run_dir / name).unlink(missing_ok=True)
    parts.append(_comparison(compared, calm, timed))
    path = run_dir / REPORT
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def _memory_png(sc: dict[str, Any]) -> str:
    return f"memory-{sc['name']}.png"


def summary_table(summary: dict[str, Any]) -> str:
    """The main table as markdown: one line per scenario, system and mode."""
    rows = [(sc["name"], *_cells(r, SUMMARY_COLUMNS)) for sc in summary["scenarios"]
            for r in sc["rows"]]  # fmt: skip
    return _table(("scenario", *SUMMARY_COLUMNS), rows, text_columns=3)


def _header(s: dict[str, Any]) -> str:
    m, settings = s["machine"], s["stack"].get("settings") or {}
    started = datetime.fromisoformat(s["started"])
    when = (started if started.tzinfo else started.replace(tzinfo=UTC)).astimezone(UTC)
    versions = [("Python", "python"), ("redis-server", "redis_server"), ("redis-py", "redis_py"),
                ("locust", "locust")]  # fmt: skip
    machine = [f"{fmt.count(m.get('cpus'))} CPUs"]
    machine += [f"{name} {m.get(key) or fmt.DASH}" for name, key in versions]
    return "\n".join([
        f"# redis-bus load test, {when:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Command: `{s['command']}`" + (" (quick run)" if s.get("quick") else ""),
        f"- Wall time: {fmt.duration(s['wall_s'])}",
        f"- Machine: {', '.join(machine)}",
        "- Data: [summary.json](summary.json), [series.json](series.json)",
        f"- Web: {fmt.count(s['stack'].get('web_workers'))} gunicorn workers; settings:",
        "",
        _table(("setting", "value"), [(f"`{k}`", f"`{v}`") for k, v in sorted(settings.items())]),
    ])  # fmt: skip


def _checks(s: dict[str, Any]) -> str:
    checks = s["checks"]
    failed = sum(not c["ok"] for c in checks)
    verdict = "✓ pass" if s["ok"] else "✗ fail"
    counts = f"{failed} of {len(checks)} failed" if failed else f"all {len(checks)} passed"
    title = f"## Checks: {verdict}, {counts}"

    def table(these: list[dict[str, Any]]) -> str:
        rows = [("✓" if c["ok"] else "✗", c["scenario"] or fmt.DASH, c["name"], c["detail"])
                for c in these]  # fmt: skip
        return _table(("", "scenario", "check", "detail"), rows)

    text = title
    if failed:
        text += "\n\n" + table([c for c in checks if not c["ok"]])
    if checks:  # every check, folded: there is one per row and subscriber
        text += f"\n\n<details><summary>All {len(checks)} checks</summary>\n\n{table(checks)}"
        text += "\n\n</details>"
    return text


def _scenario(run_dir: Path, sc: dict[str, Any], timeline_png: str | None) -> str:
    poisoned = any("fates" in r for r in sc["rows"])
    calm = (
        "none from the runner: the handlers are the fault"
        if poisoned
        else "none (the reference run)"
    )
    faults = "; ".join(_fault(f) for f in sc["faults"]) or calm
    lines = [
        f"## `{sc['name']}`: {sc['title']}",
        "",
        sc["description"],
        "",
        f"Load: {sc['shape']} shape, {fmt.seconds(sc['traffic_s'])} s of traffic, "
        f"{fmt.seconds(sc['elapsed_s'])} s in all. "
        f"Faults, in seconds since traffic started: {faults}.",
        "",
        _locust(run_dir, sc.get("locust")),
        "",
        _table(SCENARIO_COLUMNS, [_cells(r, SCENARIO_COLUMNS) for r in sc["rows"]], 2),
    ]
    said = [sentence for r in sc["rows"] for sentence in _sentences(r)] + _in_hand(sc)
    lines += ["", *(f"- {sentence}" for sentence in said)] if said else []
    if timeline_png:
        lines += ["", f"![Timeline of {sc['name']}: messages/s per system]({timeline_png})"]
    else:
        lines += ["", "No time series was recorded for this scenario, so there is no timeline."]
    return "\n".join(lines)


def _sentences(r: Row) -> list[str]:
    who = f"{r['system']} {r['mode']}"
    exits = []
    for ex in r["exits"]:
        when = f"at {fmt.moment(ex['at_s'])} s" if ex["at_s"] is not None else "at an unknown time"
        if ex["code"] < 0:  # minus the signal that ended the process, as subprocess says
            how = f"was killed by {_signal_name(-ex['code'])} {when}"
        else:
            how = f"exited with code {ex['code']} {when}"
        error = ex["error"].strip()
        exits.append(f"The {who} consumer `{ex['who']}` {how}" + (f": {error}" if error else "."))
    # the runner's notes may tell the same exits in its own words: the sentences above say more
    told = tuple(f"{ex['who']} exited" for ex in r["exits"])
    return [f"{who}: {n}" for n in r["notes"] if not (told and n.startswith(told))] + exits


def _in_hand(sc: dict[str, Any]) -> list[str]:
    """The supervised workers' restarts, and the oldest message their handlers held."""
    out = []
    if "restarts" in sc:
        told = [
            f"`{who}` {sum(ends.values()):,} ("
            + (", ".join(f"{how}: {n:,}" for how, n in ends.items()) or "none")
            + ")"
            for who, ends in sc["restarts"].items()
        ]
        out.append(f"Worker processes restarted by their supervisors (`--processes "
                   f"{sc.get('processes', '?')}`): {'; '.join(told)}.")  # fmt: skip
    seen = sc.get("inhand")
    if seen:
        out.append(
            f"Oldest message in a handler's hands: at most {seen['max_age_ms'] / 1000:.2f} s "
            f"(time limit {seen['limit_ms'] / 1000:g} s; {seen['samples']:,} samples of every "
            f"worker's stats, one every {seen['every_s']:g} s); the timeline's last panel."
        )
    return out


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _comparison(compared: bool, calm: list[dict[str, Any]], timed: bool) -> str:
    lines = ["## Comparison", ""]
    if not compared:
        return "\n".join([*lines, "No scenario has rows to compare."])
    lines += [
        "Per scenario and mode, redis-bus against the baseline: the share of expected deliveries "
        "that arrived (pub/sub: accepted messages times subscribers), and the messages lost, "
        "duplicated and stranded in Redis after the drain (on a symlog scale, so that 0 and "
        "thousands both read).",
        "",
        f"![Outcomes per scenario: delivered %, lost, duplicated, stranded]({OUTCOMES_PNG})",
        "",
    ]
    names = ", ".join(f"`{sc['name']}`" for sc in calm)
    if not timed:
        why = f"{names} measured no latency" if calm else "no scenario ran without faults"
        return "\n".join([*lines, f"There is no latency plot: {why}."])
    return "\n".join([
        *lines,
        f"Latency percentiles from the scenarios without faults ({names}): HTTP is the producer's "
        "request, end-to-end runs from the send to the end of the consumer's handler.",
        "",
        f"![HTTP and end-to-end latency p50, p95, p99 per mode]({LATENCY_PNG})",
    ])  # fmt: skip


def _locust(run_dir: Path, locust: dict[str, Any] | None) -> str:
    if not locust:
        return "Locust: no figures for this scenario."
    stats = (f"Locust: {fmt.count(locust.get('requests'))} requests, "
             f"{fmt.count(locust.get('failures'))} failures, {fmt.rate(locust.get('rps'))} "
             "requests/s")  # fmt: skip
    if not locust.get("html"):
        return stats + "."
    link = Path(locust["html"])
    if link.is_absolute():  # the link must survive the directory being moved
        link = link.relative_to(run_dir) if link.is_relative_to(run_dir) else Path(link.name)
    if not (run_dir / link).is_file():
        return f"{stats}; locust's report `{link.as_posix()}` is missing from this directory."
    return f"{stats}; [locust's report]({link.as_posix()})."


def _fault(f: dict[str, Any]) -> str:
    detail = f" ({f['note']})" if f.get("note") else ""
    if f["end_s"] <= f["start_s"]:
        return f"{f['label']} at {fmt.moment(f['start_s'])}{detail}"
    return f"{f['label']} from {fmt.moment(f['start_s'])} to {fmt.moment(f['end_s'])}{detail}"


def _mode(r: Row) -> str:
    n, kind = r["consumers"], "subscriber" if r["mode"] == "pubsub" else "worker"
    return f"{r['mode']} ({n} {kind}{'' if n == 1 else 's'})"


def _delivered(r: Row) -> str:
    return f"{fmt.count(r['delivered'])} ({fmt.percent(r['delivered'], r['expected'])})"


def _counts(key: str) -> Callable[[Row], str]:
    return lambda r: fmt.count(r[key])


def _p99(key: str) -> Callable[[Row], str]:
    return lambda r: fmt.ms(r[key]["p99"] if r[key] else None)


CELLS: dict[str, Callable[[Row], str]] = {
    "system": lambda r: r["system"],
    "mode": _mode,
    **{name: _counts(key) for name, key in [
        ("sent", "sent"), ("accepted", "accepted"), ("rejected", "rejected"),
        ("unknown", "unknown"), ("lost", "lost"), ("duplicated", "duplicated"),
        ("dead-lettered", "dead_lettered"), ("stranded", "stranded"),
        ("HTTP errors", "http_errors"), ("reconnects", "reconnects"),
    ]},
    "delivered": _delivered,
    "accepted/s": lambda r: fmt.rate(r["accepted_per_s"]),
    "HTTP p99 ms": _p99("http_ms"),
    "e2e p99 ms": _p99("e2e_ms"),
    "resume s": lambda r: fmt.seconds(r["resume_s"]),
    "stall s": lambda r: fmt.seconds(r["stall_s"]),
    "pub/sub lost counted / missed": lambda r: (
        f"{fmt.count(r['counted_lost'])} / {fmt.count(r['missed'])}"
        if r["mode"] == "pubsub" else fmt.DASH
    ),
    "complete": lambda r: "✓" if r["complete"] else "✗",
}  # fmt: skip
SUMMARY_COLUMNS = (
    "system", "mode", "accepted", "delivered", "lost", "duplicated", "dead-lettered", "stranded",
    "HTTP errors", "accepted/s", "HTTP p99 ms", "e2e p99 ms", "resume s",
    "pub/sub lost counted / missed",
)  # fmt: skip
SCENARIO_COLUMNS = (
    "system", "mode", "sent", "accepted", "rejected", "unknown", "delivered", "lost",
    "duplicated", "stranded", "resume s", "stall s", "reconnects", "complete",
)  # fmt: skip


def _cells(r: Row, columns: Sequence[str]) -> list[str]:
    return [CELLS[c](r) for c in columns]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 99) -> str:
    # numbers are right-aligned; the first text_columns (names) stay left
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    return "\n".join([_row(header), _row(align), *(_row(r) for r in rows)])


def _row(cells: Sequence[str]) -> str:
    # a "|" inside a cell would split it; a newline would end the table
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.report DIR``: regenerate a run's report; 2 if DIR is unusable."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.report",
        description="Write report.md and PNG plots from a run's summary.json and series.json.",
    )
    parser.add_argument("run_dir", type=Path, metavar="DIR", help="loadtest/reports/<timestamp>")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.run_dir)
    except rundir.ReportError as e:
        print(f"loadtest.report: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
