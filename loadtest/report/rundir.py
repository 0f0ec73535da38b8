"""A run directory as the report reads it: ``summary.json`` and ``series.json``, checked
against the fields the report uses and their JSON types before anything is written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from producer.errors import BusError


class ReportError(BusError):
    """A run directory that cannot be reported on: missing, unreadable or malformed."""


def _spec(**groups: str) -> dict[str, tuple[type, ...]]:
    types: dict[str, tuple[type, ...]] = {
        "str": (str,), "int": (int,), "num": (int, float), "bool": (bool,), "list": (list,),
        "dict": (dict,), "int_or_null": (int, type(None)), "num_or_null": (int, float, type(None)),
        "dict_or_null": (dict, type(None)),
    }  # fmt: skip
    return {key: types[kind] for kind, keys in groups.items() for key in keys.split()}


# The fields this report reads and their JSON types, checked before anything is written: a
# malformed run fails naming the place, not with a traceback halfway through the plots.
SUMMARY_SPEC = _spec(
    int="schema", str="command started", num="wall_s", dict="machine stack", bool="ok",
    list="checks scenarios",
)  # fmt: skip
CHECK_SPEC = _spec(str="scenario name detail", bool="ok")
SCENARIO_SPEC = _spec(
    str="name title description shape", num="traffic_s elapsed_s", list="modes faults rows"
)
FAULT_SPEC = _spec(str="label", num="start_s end_s")
ROW_SPEC = _spec(
    str="system mode", num="accepted_per_s", num_or_null="resume_s stall_s",
    int="consumers sent accepted rejected unknown http_errors expected delivered lost "
    "duplicated dead_lettered stranded unknown_delivered phantom",
    int_or_null="missed counted_lost reconnects", dict_or_null="http_ms e2e_ms",
    list="exits notes", bool="complete",
)  # fmt: skip
PERCENTILES_SPEC = _spec(num="p50 p95 p99")
EXIT_SPEC = _spec(str="who error", num_or_null="at_s", int="code")
SERIES_SPEC = _spec(num="bin_s", dict="scenarios")
SERIES_SCENARIO_SPEC = _spec(list="t", dict="rows")
SERIES_ROW_SPEC = _spec(str="system mode", int="consumers", list="accepted failed delivered")
MEMORY_SPEC = _spec(num="every_s fit_from_s", int="samples", list="processes", dict="redis")
PROCESS_SPEC = _spec(str="name role", int="samples")
SERIES_MEMORY_SPEC = _spec(list="t redis_used_memory redis_rss", dict="rss_kib")


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's summary and series, checked against the schema; ReportError if unusable."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    summary, series = _read(run_dir / "summary.json"), _read(run_dir / "series.json")
    _expect(summary, SUMMARY_SPEC, "summary.json")
    if summary["schema"] != 1:
        raise ReportError(f"summary.json: schema {summary['schema']}, this report reads schema 1")
    try:
        datetime.fromisoformat(summary["started"])
    except ValueError:
        raise ReportError(f"summary.json.started: not ISO-8601: {summary['started']!r}") from None
    for i, check in enumerate(summary["checks"]):
        _expect(check, CHECK_SPEC, f"summary.json checks[{i}]")
    for i, sc in enumerate(summary["scenarios"]):
        where = f"summary.json scenarios[{i}]"
        _expect(sc, SCENARIO_SPEC, where)
        for j, fault in enumerate(sc["faults"]):
            _expect(fault, FAULT_SPEC, f"{where}.faults[{j}]")
        if "memory" in sc:
            _expect(sc["memory"], MEMORY_SPEC, f"{where}.memory")
            for j, proc in enumerate(sc["memory"]["processes"]):
                _expect(proc, PROCESS_SPEC, f"{where}.memory.processes[{j}]")
        for j, r in enumerate(sc["rows"]):
            _expect(r, ROW_SPEC, f"{where}.rows[{j}]")
            for key in ("http_ms", "e2e_ms"):
                if r[key] is not None:
                    _expect(r[key], PERCENTILES_SPEC, f"{where}.rows[{j}].{key}")
            for k, ex in enumerate(r["exits"]):
                _expect(ex, EXIT_SPEC, f"{where}.rows[{j}].exits[{k}]")
    _expect(series, SERIES_SPEC, "series.json")
    for name, sc in series["scenarios"].items():
        _expect(sc, SERIES_SCENARIO_SPEC, f"series.json scenarios.{name}")
        if "memory" in sc:
            _expect(sc["memory"], SERIES_MEMORY_SPEC, f"series.json scenarios.{name}.memory")
        for key, r in sc["rows"].items():
            _expect(r, SERIES_ROW_SPEC, f"series.json scenarios.{name}.rows.{key}")
    return summary, series


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (not a load-test run directory?)") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ReportError(f"{path}: not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: a JSON object expected, found {type(data).__name__}")
    return data


def _expect(obj: Any, spec: Mapping[str, tuple[type, ...]], where: str) -> None:
    if not isinstance(obj, dict):
        raise ReportError(f"{where}: a JSON object expected, found {type(obj).__name__}")
    for key, types in spec.items():
        if key not in obj:
            raise ReportError(f"{where}: {key!r} is missing")
        if not isinstance(obj[key], types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ReportError(f"{where}.{key}: {names} expected, found {obj[key]!r}")
