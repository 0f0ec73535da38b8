"""``python -m loadtest``: run the load-test scenarios and write a report.

Never imports locust: it starts locust as a subprocess. Every process it starts is stopped by
process id before it exits, also on Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest.report import checks
from loadtest.runner import scenarios
from loadtest.runner.procs import ROOT, StackError
from loadtest.runner.run import SETTINGS, Progress, run_scenario, wait_stopped

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a guarantee of redis-bus did not hold: see the report's checks
EXIT_USAGE = 2
EXIT_STACK = 3  # a process of the stack did not start, or locust did not run
EXIT_INTERRUPTED = 130

EPILOG = """\
scenarios (`python -m loadtest list` describes them):
  {names}
examples:
  python -m loadtest run all --quick      # every fault, a few seconds each (~2 min)
  python -m loadtest run all              # the full suite (~37 minutes, the soak's 30 included)
  python -m loadtest run blackhole
  python -m loadtest run soak --quick     # the soak for 3 minutes (--duration 600: 10)
  python -m loadtest report loadtest/reports/<timestamp>
Exit codes: 0 every check passed, 1 a check failed, 2 usage, 3 the stack failed, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    names = " ".join(s.name for s in scenarios.SCENARIOS)
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load tests of redis-bus against the naive baseline, with faults, "
        "exact accounting by message id, and a report.",
        epilog=EPILOG.format(names=names),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario, or all of them, and write a report")
    run.add_argument("scenario", help="a scenario name, or 'all'")
    run.add_argument(
        "--quick",
        action="store_true",
        help="shorter traffic; 'all' leaves out the steady, idle-long and soak scenarios",
    )
    run.add_argument(
        "--duration",
        type=_seconds,
        metavar="S",
        help="seconds of traffic of each scenario run, instead of its own (a short soak)",
    )
    run.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="report directory (default: loadtest/reports/<timestamp>)",
    )
    run.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the ledgers and Redis data (printed path) for inspection",
    )
    sub.add_parser("list", help="describe the scenarios")
    rep = sub.add_parser("report", help="write report.md and the plots again from a run's JSON")
    rep.add_argument("dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.command == "list":
        for s in scenarios.SCENARIOS:
            quick = f", quick {s.quick_traffic_s:g}s" if s.quick_traffic_s else ", not in quick"
            if s.quick_traffic_s and not s.in_quick_suite:
                quick += " when named (not in the quick suite)"
            print(f"{s.name:<16} {s.title} ({s.traffic_s:g}s{quick})\n  {s.description}\n")
        return EXIT_OK
    if args.command == "report":
        from loadtest.report import markdown as report

        return int(report.main([str(args.dir)]))
    try:
        selected = scenarios.select(args.scenario, args.quick)
    except KeyError:
        print(
            f"python -m loadtest: unknown scenario {args.scenario!r}; try "
            "`python -m loadtest list`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.duration:
        selected = [replace(s, traffic_s=args.duration, quick_traffic_s=None) for s in selected]
    if shutil.which("redis-server") is None:
        print(
            "python -m loadtest: redis-server is not installed (`make bootstrap` installs it)",
            file=sys.stderr,
        )
        return EXIT_STACK
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = (args.out or ROOT / "loadtest" / "reports" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="loadtest-"))
    try:
        return _run(selected, args, out, work)
    except KeyboardInterrupt:
        wait_stopped()
        print("\ninterrupted: every process the run started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        wait_stopped()
        if args.keep_work:
            print(f"ledgers and Redis data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(
    selected: list[scenarios.Scenario], args: argparse.Namespace, out: Path, work: Path
) -> int:
    started, t_start = datetime.now(UTC), time.monotonic()
    suite = "quick" if args.quick else "full"
    print(f"loadtest: {len(selected)} scenario(s), {suite} suite; report in {_rel(out)}")
    entries, series = [], {}
    for i, scn in enumerate(selected, start=1):
        printer = _Printer(f"[{i}/{len(selected)} {scn.name}]", t_start)
        try:
            entry, s = run_scenario(scn, args.quick, work / scn.name, out, printer.show)
        except StackError as exc:
            printer.done(f"failed: {exc}")
            return EXIT_STACK
        entries.append(entry)
        series[scn.name] = s
        printer.done(_one_line(entry))
    summary = {
        "schema": 1,
        "command": "python -m loadtest " + shlex.join(args.argv),
        "quick": args.quick,
        "started": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "wall_s": round(time.monotonic() - t_start, 1),
        "machine": machine(),
        "stack": {"web_workers": int(SETTINGS["BUS_WEB_WORKERS"]), "settings": SETTINGS},
        "scenarios": entries,
    }
    summary["checks"] = checks.evaluate(summary)
    summary["ok"] = all(c["ok"] for c in summary["checks"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "series.json").write_text(json.dumps({"bin_s": 0.5, "scenarios": series}) + "\n")
    from loadtest.report import markdown as report  # matplotlib loads only now

    path = report.write_report(out)
    print()
    print(report.summary_table(summary))
    print()
    for c in summary["checks"]:
        if not c["ok"]:
            print(f"FAILED  {c['scenario']}: {c['name']}: {c['detail']}")
    verdict = "every check passed" if summary["ok"] else "SOME CHECKS FAILED"
    print(f"loadtest: {verdict} in {summary['wall_s']:.0f} s; report: {_rel(path)}")
    return EXIT_OK if summary["ok"] else EXIT_CHECK_FAILED


def machine() -> dict[str, Any]:
    """Versions and cores: what a reader needs to compare two reports."""
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    server = next((w[2:] for w in version.split() if w.startswith("v=")), version.strip())
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_server": server,
        "redis_py": metadata.version("redis"),
        "locust": metadata.version("locust"),
    }


class _Printer:
    """The progress line: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, prefix: str, t_start: float) -> None:
        self.prefix = prefix
        self.t_start = t_start
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 5:
            return
        self.last = now
        rates = "  ".join(f"{k} {v:,.0f}/s" for k, v in p.rates.items())
        fault = f"  fault: {p.fault}" if p.fault else ""
        text = (
            f"{self.prefix} {p.phase} {p.elapsed_s:4.1f}/{p.planned_s:g}s  {rates}{fault}"
            f"  (total {now - self.t_start:.0f}s)"
        )
        print(
            ("\r\x1b[K" if self.tty else "") + text,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

    def done(self, text: str) -> None:
        print(("\r\x1b[K" if self.tty else "") + f"{self.prefix} {text}", file=sys.stderr)


def _one_line(entry: dict[str, Any]) -> str:
    parts = []
    for row in entry["rows"]:
        parts.append(
            f"{row['system']} {row['mode']}: {row['accepted']:,} in, "
            f"{row['lost']:,} lost, {row['duplicated']:,} dup"
        )
    return f"done in {entry['elapsed_s']:.0f}s; " + "; ".join(parts)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _seconds(text: str) -> float:
    value = float(text)
    if not 5 <= value < 86_400 * 7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"between 5 seconds and a week, got {text}")
    return value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean stop as Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
