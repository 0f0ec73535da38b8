"""The bench's handlers section, in a smoke run: one row per worker of each workload, every job
done, and the handlers really work (no worker drains faster than its jobs' sleep or CPU allows)."""

from __future__ import annotations

import math
import shutil

import pytest

from loadtest.bench import handlers, peer_tasks, peers, table
from loadtest.bench.common import Scale

SLEEP_TAG, CPU_TAG = (w.tag for w in handlers.WORKLOADS)
# How many jobs each worker of the sleep workload runs at once, and each of the CPU workload's
# processes, in the table's order; a row missing here fails the test (a new row says what it is
# held to).
AT_ONCE = {
    handlers.OURS_SLEEP: 1,
    "Dramatiq --processes 1 --threads 8 (its default threads)": 8,
    "Celery --pool threads --concurrency 8": 8,
    handlers.RQ: 1,
    handlers.OURS_CPU: 1,
    "Dramatiq --processes 2 --threads 1": 2, "Dramatiq --processes 1 --threads 1": 1,
    "Celery --pool prefork --concurrency 2": 2, "Celery --pool prefork --concurrency 1": 1,
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_handlers_smoke_rows_are_well_formed_and_the_jobs_take_their_time() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")
    rows = handlers.run(Scale(smoke=True))
    by_name = {r.name: r for r in rows}
    ideal = f"{SLEEP_TAG}: {handlers.IDEAL}"
    ours_sleep, ours_cpu = f"{SLEEP_TAG}: {handlers.OURS_SLEEP}", f"{CPU_TAG}: {handlers.OURS_CPU}"
    versus = f"{ours_sleep} / the best peer"
    measured = [f"{tag}: {name}" for tag, names in (
        (SLEEP_TAG, list(AT_ONCE)[:4]), (CPU_TAG, list(AT_ONCE)[4:]))
        for name in names]  # fmt: skip
    assert [r.name for r in rows] == [ideal, *measured[:4], versus, *measured[4:]]
    assert measured[0] == ours_sleep and measured[4] == ours_cpu
    assert all(r.section == handlers.SECTION for r in rows)
    assert by_name[ideal].value == 400 and by_name[ideal].unit == "jobs/s"
    assert by_name[ours_sleep].ref == ideal and "0.9x the ideal" in by_name[ours_sleep].target
    assert "1.7x" in by_name[ours_cpu].target

    for name in measured:
        row = by_name[name]
        tag, _, title = name.partition(": ")
        assert row.unit == "jobs/s" and row.value > 0, row
        refs = {handlers.OURS_SLEEP: ideal, handlers.OURS_CPU: None}
        assert row.ref == refs.get(title, ours_sleep if tag == SLEEP_TAG else ours_cpu)
        if row.ref is not None:
            assert table.ratio(row, rows) == pytest.approx(row.value / by_name[row.ref].value)
        extra = row.extra
        n = 40 if tag == SLEEP_TAG else 60
        assert extra["jobs"] == n and extra["capped"] is False, extra
        done = extra["done_in_window"]
        assert 0 < done < n, extra  # from the first poll that saw one done
        # The window holds `done` jobs, `AT_ONCE` at a time, all but the first wave started in
        # it: each 20 ms, or at least half the calibrated 5 ms of CPU (calibrated on its best run).
        per_job_s = peer_tasks.SLEEP_S if tag == SLEEP_TAG else handlers.CPU_S / 2
        floor_s = (math.ceil(done / AT_ONCE[title]) - 1) * per_job_s
        assert extra["window_s"] >= floor_s - 0.001, (name, extra)
        if tag == CPU_TAG:
            assert extra["cpu_loops"] > 0

    peers = [by_name[m] for m in measured[1:4]]
    best = max(peers, key=lambda r: r.value)
    assert by_name[versus].value == pytest.approx(by_name[ours_sleep].value / best.value)
    assert by_name[versus].extra["best_peer"] == best.name
    assert by_name[versus].target == ">= 1.0x the best peer"
    assert f"| {ours_sleep} |" in table.markdown(rows, table.meta())


def test_a_missing_peer_stops_the_section_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "rq" else real(name, *a))  # fmt: skip
    with pytest.raises(RuntimeError, match=r"rq not installed.*\.\[bench\]"):
        handlers.run(Scale(smoke=True))
