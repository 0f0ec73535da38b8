"""The bench's handlers section, in a smoke run: one row per worker of each workload, every job
done, and the handlers really work (no worker drains faster than its jobs' sleep or CPU allows);
the no-op drain's rows beside the worker before concurrency and the raw limits; the hung
handler's two times. Every peer runs, arq and SAQ too: their venv (``.venv-peers-async/``) is
built on the first run (pip, about 10 s here) and reused after; the rest takes about 50 s."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from loadtest.bench import async_peers, handlers, hung, noop_drain, peer_tasks, table
from loadtest.bench.common import Result, Scale

SLEEP_TAG, AWAIT_TAG, CPU_TAG = (w.tag for w in handlers.WORKLOADS)
# How many jobs each worker runs at once (the CPU workload: its processes), per workload, in the
# table's order; a row missing here fails the test (a new row says what it is held to).
AT_ONCE = {
    SLEEP_TAG: {
        handlers.OURS_SLEEP: 8,
        "Dramatiq --processes 1 --threads 8 (its default threads)": 8,
        "Celery --pool threads --concurrency 8": 8,
        handlers.RQ: 1,
    },
    AWAIT_TAG: {handlers.OURS_AWAIT: 100, async_peers.ARQ.name: 100, async_peers.SAQ.name: 100},
    CPU_TAG: {
        handlers.OURS_CPU_1: 1, handlers.OURS_CPU_2: 2,
        handlers.DRAMATIQ_CPU_1: 1, "Dramatiq --processes 2 --threads 1": 2,
        handlers.CELERY_CPU_1: 1, "Celery --pool prefork --concurrency 2": 2,
    },
}  # fmt: skip
IDEALS = {SLEEP_TAG: (handlers.IDEAL, 400), AWAIT_TAG: (handlers.IDEAL_AWAIT, 5000)}
OURS = {SLEEP_TAG: handlers.OURS_SLEEP, AWAIT_TAG: handlers.OURS_AWAIT}
SMOKE_N = {SLEEP_TAG: 40, AWAIT_TAG: 300, CPU_TAG: 60}


def _check_workload(tag: str, rows: list[Result]) -> None:
    by_name = {r.name: r for r in rows}
    for title, at_once in AT_ONCE[tag].items():
        row = by_name[f"{tag}: {title}"]
        assert row.unit == "jobs/s" and row.value > 0, row
        if row.ref is not None:
            assert table.ratio(row, rows) == pytest.approx(row.value / by_name[row.ref].value)
        extra, n = row.extra, SMOKE_N[tag]
        assert extra["jobs"] == n and extra["capped"] is False, extra
        done = extra["done_in_window"]
        assert 0 < done < n, extra  # from the first poll that saw one done
        # The window holds `done` jobs, `at_once` at a time, all but the first wave started in
        # it: each 20 ms, or at least half the calibrated 5 ms of CPU (calibrated on its best run).
        per_job_s = handlers.CPU_S / 2 if tag == CPU_TAG else peer_tasks.SLEEP_S
        floor_s = (math.ceil(done / at_once) - 1) * per_job_s
        assert extra["window_s"] >= floor_s - 0.001, (row.name, extra)
        if tag == CPU_TAG:
            assert extra["cpu_loops"] > 0
    if tag in IDEALS:
        ideal, rate = IDEALS[tag]
        ours = by_name[f"{tag}: {OURS[tag]}"]
        assert by_name[f"{tag}: {ideal}"].value == rate and ours.ref == f"{tag}: {ideal}"
        peer_rows = [by_name[f"{tag}: {t}"] for t in AT_ONCE[tag] if t != OURS[tag]]
        assert all(r.ref == ours.name for r in peer_rows)
        best = max(peer_rows, key=lambda r: r.value)
        versus = by_name[f"{ours.name} / the best peer"]
        assert versus.value == pytest.approx(ours.value / best.value)
        assert versus.extra["best_peer"] == best.name and versus.target == ">= 1.0x the best peer"
    else:
        two = by_name[f"{tag}: {handlers.OURS_CPU_2}"]
        assert two.ref == f"{tag}: {handlers.OURS_CPU_1}" and "1.7x" in two.target


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_handlers_smoke_rows_are_well_formed_and_the_jobs_take_their_time() -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make bootstrap` installs it")
    rows = handlers.run(Scale(smoke=True))
    assert all(r.section == handlers.SECTION for r in rows)
    names = [r.name for r in rows]
    for workload in handlers.WORKLOADS:
        tagged = [r for r in rows if r.name.startswith(f"{workload.tag}: ")]
        expected = [f"{workload.tag}: {row.title}" for row in workload.rows]
        if workload.tag in OURS:
            expected.append(f"{workload.tag}: {OURS[workload.tag]} / the best peer")
        assert [r.name for r in tagged] == expected
        _check_workload(workload.tag, tagged)

    by_name = {r.name: r for r in rows}
    for delivery, (raw_name, _, raw_target) in noop_drain.RAW.items():
        before = by_name[noop_drain.before_name(delivery)]  # this checkout has its history
        raw = by_name[f"{noop_drain.TAG}: {raw_name}"]
        for c in noop_drain.CONCURRENCY:
            ours = by_name[noop_drain.ours_name(delivery, c)]
            assert ours.ref == before.name and before.value > 0 and ours.value > 0
            versus = by_name[f"{ours.name} / {raw_name}"]
            assert versus.value == pytest.approx(ours.value / raw.value)
            assert versus.target == raw_target

    good, dead = (r for r in rows if r.name.startswith(f"{hung.TAG}: "))
    assert names[-2:] == [good.name, dead.name]
    assert good.target == "<= 10 s" and good.higher_is_better is False
    # 50 of 20 ms each on the 7 slots the hung one leaves; it dies after 3 time limits of 2 s.
    assert math.ceil(hung.GOOD / 8) * peer_tasks.SLEEP_S <= good.value < dead.value
    assert dead.value >= hung.MAX_ATTEMPTS * hung.TIMEOUT_S
    assert f"| {by_name[names[1]].name} |" in table.markdown(rows, table.meta())


def test_arq_and_saq_that_cannot_be_installed_stop_the_section_naming_how(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(async_peers, "VENV", tmp_path / "venv")
    monkeypatch.setattr(async_peers, "STAMP", tmp_path / "venv" / "requirements.txt")
    monkeypatch.setattr(async_peers, "REQUIREMENTS", (str(tmp_path / "no-such-package"),))
    named = r"(?s)arq and SAQ are not installed.*install them: .*loadtest\.bench\.async_peers"
    with pytest.raises(RuntimeError, match=named):
        handlers.run(Scale(smoke=True))
