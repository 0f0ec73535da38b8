"""``make bench`` (``python -m loadtest.bench``): the table, the files it writes, and the drain
and latency sections in smoke runs. The figures are the bench's to judge, not a test's: these
check that every row is there, well formed and compared to the row it names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench import drain, latency, libs, table
from loadtest.bench.common import Result, Scale
from tests.procs import ROOT


def test_ratios_follow_the_rows_orientation() -> None:
    rows = [Result("s", "ref", 200.0, "msg/s"), Result("s", "ours", 100.0, "msg/s", ref="ref"),
            Result("s", "slow ref", 4.0, "ms", higher_is_better=False),
            Result("s", "fast", 2.0, "ms", ref="slow ref", higher_is_better=False)]  # fmt: skip
    assert table.ratio(rows[0], rows) is None
    assert table.ratio(rows[1], rows) == 0.5  # half the rate
    assert table.ratio(rows[3], rows) == 2.0  # half the latency: twice as good
    with pytest.raises(ValueError, match="missing row"):
        table.ratio(Result("s", "x", 1.0, "msg/s", ref="nowhere"), rows)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_drain_smoke_rows() -> None:
    rows = drain.run(Scale(smoke=True))
    assert all(r.section == "drain" and r.unit == "msg/s" and r.value > 0 for r in rows)
    ours = [r for r in rows if r.name.startswith("redis-bus")]
    assert {r.name for r in ours} == {
        "redis-bus at-least-once, batch 100", "redis-bus at-most-once, batch 100",
        "redis-bus at-least-once, one at a time", "redis-bus at-most-once, one at a time",
    }  # fmt: skip
    assert all(r.ref and r.target and table.ratio(r, rows) for r in ours)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_latency_smoke_rows() -> None:
    rows = latency.run(Scale(smoke=True))
    assert len(rows) == len(latency.RATES) * len(latency.CONSUMERS)
    for row in rows:
        assert row.unit == "ms" and not row.higher_is_better and row.value > 0
        assert row.extra["messages"] == int(row.extra["rate"] * 0.4)  # every message measured
        assert row.extra["p50_ms"] <= row.value <= row.extra["max_ms"]
    workers = [r for r in rows if r.name.startswith("redis-bus at-")]
    assert len(workers) == 4 and all(table.ratio(r, rows) for r in workers)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_command_prints_the_table_and_writes_json_and_markdown(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "loadtest.bench", "--smoke", "--only", "drain",
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=150)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "## drain" in out.stdout and "| redis-bus at-least-once, batch 100 |" in out.stdout
    (as_json,) = tmp_path.glob("bench-*.json")
    doc = json.loads(as_json.read_text())
    assert doc["meta"]["smoke"] is True and doc["meta"]["failed"] == []
    assert len(doc["rows"]) == 8 and all(r["section"] == "drain" for r in doc["rows"])
    assert as_json.with_suffix(".md").read_text().startswith("# make bench")


def test_an_unknown_section_is_refused_with_the_known_ones() -> None:
    out = subprocess.run([sys.executable, "-m", "loadtest.bench", "--only", "drian"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)  # fmt: skip
    assert out.returncode == 2
    assert "unknown section(s) drian" in out.stderr and "drain" in out.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_libraries_smoke_rows() -> None:
    rows = libs.run(Scale(smoke=True))
    assert [r.unit for r in rows] == ["µs"] * 7 + ["msg/s"] * 2
    assert all(r.value > 0 for r in rows)
    assert all(table.ratio(r, rows) for r in rows if r.ref)
