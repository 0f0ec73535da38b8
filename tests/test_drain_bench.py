"""The drain benchmark runs end to end and prints a well-formed table (not a timing test)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.procs import ROOT


@pytest.mark.slow
def test_drain_benchmark_prints_a_row_per_configuration() -> None:
    """Four configurations, each with a positive rate and a ratio; the first row is 1.0x."""
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.drain", "--messages", "2000"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^(at-\S+)\s+(\d+)\s+([\d,]+)\s+([\d.]+)x$", out.stdout, re.M)
    assert [(r[0], r[1]) for r in rows] == [
        ("at-least-once", "1"),
        ("at-least-once", "100"),
        ("at-most-once", "1"),
        ("at-most-once", "100"),
    ]
    assert all(int(r[2].replace(",", "")) > 0 for r in rows)
    assert rows[0][3] == "1.0"
