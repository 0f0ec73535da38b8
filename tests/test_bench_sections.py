"""The bench's subscriber and memory sections, in smoke runs: the rows are well formed and the
messages all arrived (the figures themselves are the bench's to judge, not a test's)."""

from __future__ import annotations

import shutil

import pytest

from loadtest.bench import flood, memory, table
from loadtest.bench.common import Scale


@pytest.fixture(autouse=True)
def _redis_server_installed() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_subscriber_smoke_rows_are_well_formed() -> None:
    rows = flood.run(Scale(smoke=True))
    names = [flood.RECEIVED, "subscriber lost", flood.RAW, "subscriber CPU per message",
             flood.RAW_CPU]  # fmt: skip
    assert [r.name for r in rows] == names
    received, lost, raw, cpu, raw_cpu = rows
    assert all(r.section == flood.SECTION for r in rows)
    assert received.unit == raw.unit == "msg/s" and received.value > 0 and raw.value > 0
    assert received.ref == flood.RAW and table.ratio(received, rows) is not None
    assert cpu.ref == flood.RAW_CPU and not cpu.higher_is_better and cpu.value > 0
    assert raw_cpu.unit == cpu.unit == "µs" and raw_cpu.value > 0
    assert table.ratio(cpu, rows) is not None
    n = received.extra["n"]
    assert lost.extra["received"] == raw.extra["received"] == n  # one turn in a smoke run
    assert lost.value == 0 and lost.extra["duplicates"] == 0, lost.extra
    assert lost.extra["published_to_nobody"] == 0
    assert f"| {flood.RECEIVED} |" in table.markdown(rows, table.meta())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_memory_smoke_rows_are_well_formed() -> None:
    rows = memory.run(Scale(smoke=True))
    for who in ("worker", "subscriber"):
        mine = [r for r in rows if r.name.startswith(f"{who} RSS")]
        assert [r.unit for r in mine] == ["MiB", "MiB", "MiB", "%"], mine
        warm, top, end, growth = mine
        assert 0 < warm.value <= top.value and 0 < end.value <= top.value
        assert end.ref == top.ref == warm.name and table.ratio(end, rows) is not None
        assert growth.value == pytest.approx(100 * (end.value - warm.value) / warm.value)
        assert growth.target and growth.extra["samples"] >= 2
        assert growth.extra["messages"] == 20_000  # every message handled, none lost
    assert "| worker RSS growth |" in table.markdown(rows, table.meta())
