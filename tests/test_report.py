"""The load-test report: report.md says what the run measured, and every plot it shows exists."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image

from loadtest.report import checks, fates, plots, rows
from loadtest.report import markdown as report
from loadtest.report.fmt import DASH
from loadtest.runner import memwatch
from tests.procs import ROOT
from tests.reportkit import (
    BIN_S,
    PNG_MAGIC,
    make_run,
    make_summary,
    row,
    scenario,
    table_rows,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    """One report written for the module's tests (plotting takes a few seconds)."""
    run_dir = tmp_path_factory.mktemp("run")
    summary = make_run(run_dir)
    path = report.write_report(run_dir)
    assert path == run_dir / "report.md"
    return run_dir, path.read_text(encoding="utf-8"), summary


def test_header_names_the_run_the_machine_and_the_settings(written) -> None:  # type: ignore[no-untyped-def]
    _, md, _ = written
    assert md.startswith("# redis-bus load test, 2025-11-23 05:42 UTC\n")
    assert "- Command: `python -m loadtest run all --quick` (quick run)" in md
    assert "- Wall time: 6 min 12 s" in md
    assert (
        "- Machine: 2 CPUs, Python 3.11.2, redis-server 7.0.15, redis-py 8.0.1, locust 2.41.0"
    ) in md
    assert "| `BUS_BLOCK_TIMEOUT_S` | `1` |" in md
    assert "| `BUS_HEARTBEAT_TTL_S` | `3` |" in md


def test_checks_give_each_verdict_and_the_overall_one(written) -> None:  # type: ignore[no-untyped-def]
    _, md, _ = written
    assert "## Checks: ✗ fail, 1 of 3 failed" in md
    assert "| ✓ | restart | pub/sub loss counted | 14 = 14 |" in md
    # the "|" in the detail is escaped, so it does not split the cell
    assert (
        "| ✗ | worker-crash | redis-bus resumes within 5 s | resumed after 6.20 s \\| bound" in md
    )


def test_summary_table_has_a_row_per_scenario_system_and_mode(written) -> None:  # type: ignore[no-untyped-def]
    _, md, summary = written
    assert report.summary_table(summary) in md
    rows = table_rows(md)
    assert len(rows) == 11
    # accepted, delivered, lost, dup, dead, stranded, HTTP errors, /s, HTTP p99, e2e p99, resume,
    # pub/sub counted / missed
    assert rows["restart", "baseline", "prodcons"] == [
        "8,000", "3,120 (39.0%)", "4", "0", "0", "4,876", "212", "267", "0.87", "1,234", DASH, DASH,
    ]  # fmt: skip
    assert rows["restart", "redis-bus", "prodcons"][:2] == ["7,900", "7,900 (100%)"]
    assert rows["restart", "redis-bus", "prodcons"][-2] == "0.004"
    assert rows["restart", "redis-bus", "pubsub"][1:3] == ["11,986 (99.8%)", "14"]
    assert rows["restart", "redis-bus", "pubsub"][-1] == "14 / 14"
    assert (
        rows["restart", "baseline", "pubsub"][-1] == f"{DASH} / 824"
    )  # the baseline counts nothing
    assert rows["mixed", "baseline", "prodcons"][8:10] == ["813", "3.3"]
    assert rows["mixed", "baseline", "pubsub"][9] == DASH  # e2e null
    assert rows["worker-crash", "redis-bus at-most-once", "prodcons"][:3] == [
        "6,000", "5,999 (99.9%)", "1",
    ]  # fmt: skip
    assert "| worker-crash | redis-bus | prodcons (2 workers) |" in md
    assert "| mixed | redis-bus | pubsub (2 subscribers) |" in md


def test_scenario_sections_tell_faults_exits_and_notes(written) -> None:  # type: ignore[no-untyped-def]
    _, md, _ = written
    restart = md[md.index("## `restart`: Redis restart (AOF on)") : md.index("## `worker-crash`")]
    assert "Faults, in seconds since traffic started: Redis restarted from 6.7 to 7.4." in restart
    assert (
        "- The baseline prodcons consumer `baseline-worker-1` exited with code 1 at 6.9 s: "
        "redis.exceptions.ConnectionError: Error 111 connecting. Connection refused."
    ) in restart
    assert "- redis-bus pubsub: 7 messages per subscriber lost while Redis was down" in restart
    assert "- baseline prodcons: 4 of 8,000 accepted messages were lost." in restart
    assert restart.count("baseline-worker-1") == 1  # the runner's note of the exit is not repeated
    assert "- baseline pubsub: 40 sends had an unknown outcome; 12 deliveries" in restart
    assert "| baseline | prodcons (1 worker) | 8,000 | 8,000 | 0 | 0 |" in restart
    assert restart.count("| ✗ |") == 1  # baseline prodcons is not complete
    assert "[locust's report](locust/restart.html)" in restart
    assert "![Timeline of restart" in restart
    crash = md[md.index("## `worker-crash`") : md.index("## Comparison")]
    assert "worker killed (kill -9) at 10.0." in crash
    assert "`baseline-worker-2` was killed by SIGKILL at an unknown time." in crash
    assert "locust's report `locust/worker-crash.html` is missing from this directory." in crash
    assert "Faults, in seconds since traffic started: none (the reference run)." in md
    assert "Latency percentiles from the scenarios without faults (`mixed`)" in md


def test_every_link_is_relative_and_every_plot_a_real_png(written) -> None:  # type: ignore[no-untyped-def]
    run_dir, md, _ = written
    links = re.findall(r"\]\(([^)]+)\)", md)
    images = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md))
    assert images == {
        "timeline-mixed.png", "timeline-restart.png", "timeline-worker-crash.png",
        "outcomes.png", "latency.png",
    }  # fmt: skip
    for link in links:
        assert not link.startswith("/") and "://" not in link, link
        assert (run_dir / link).is_file(), link
    sizes = {}
    for name in images:
        data = (run_dir / name).read_bytes()
        assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", name
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 700 and height >= 350 and len(data) > 20_000, (name, width, height)
        rgb = (image.imread(run_dir / name)[..., :3] * 255).astype(np.int64)  # decodes it all
        colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
        assert len(colours) > 50, name  # lines, shading, text: not a blank canvas
        sizes[name] = (width, height)
    # one panel per mode: restart has two, worker-crash one
    assert sizes["timeline-restart.png"][1] > sizes["timeline-worker-crash.png"][1] * 1.5


def test_pubsub_deliveries_are_plotted_per_subscriber() -> None:
    series_row = {"system": "redis-bus", "mode": "pubsub", "consumers": 3,
                  "accepted": [10, 20], "failed": [0, 2], "delivered": [30, 57]}  # fmt: skip
    r = plots.rates(series_row, 0.5)
    assert r["accepted"].tolist() == [20, 40]
    assert r["delivered"].tolist() == [20, 38]
    assert r["failed"].tolist() == [0, 4]
    assert plots.rates({**series_row, "mode": "prodcons"}, 0.5)["delivered"].tolist() == [60, 114]


def test_without_a_calm_scenario_there_is_no_latency_plot(tmp_path: Path) -> None:
    summary = make_summary()
    summary["scenarios"] = summary["scenarios"][1:]
    make_run(tmp_path, summary)
    (tmp_path / "latency.png").write_bytes(b"stale")
    md = report.write_report(tmp_path).read_text(encoding="utf-8")
    assert "There is no latency plot: no scenario ran without faults." in md
    assert "latency.png" not in md
    assert not (tmp_path / "latency.png").exists()


def test_main_regenerates_and_prints_the_path(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    summary = make_summary()
    summary["scenarios"] = summary["scenarios"][2:]  # one scenario: quick to draw
    make_run(tmp_path, summary)
    assert report.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.md")
    assert (
        "| worker-crash | baseline | prodcons (2 workers) |" in (tmp_path / "report.md").read_text()
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "summary.json").write_text("{not json"), "summary.json: not readable JSON"),
        (lambda d: (d / "series.json").unlink(), "series.json: missing"),
        (lambda d: _edit(d, lambda s: s.update(schema=2)), "schema 2, this report reads schema 1"),
        (
            lambda d: _edit(d, lambda s: s["scenarios"][1]["rows"][2].pop("lost")),
            "summary.json scenarios[1].rows[2]: 'lost' is missing",
        ),
        (
            lambda d: _edit(d, lambda s: s["scenarios"][0]["rows"][0].update(accepted="many")),
            "scenarios[0].rows[0].accepted: int expected, found 'many'",
        ),
    ],
)
def test_a_malformed_run_exits_2_naming_the_problem(
    tmp_path: Path, capsys, damage, message
) -> None:  # type: ignore[no-untyped-def]
    make_run(tmp_path)
    damage(tmp_path)
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loadtest.report: error: ") and message in err, err
    assert not (tmp_path / "report.md").exists()


def test_a_missing_directory_exits_2_from_the_command_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.report", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == f"loadtest.report: error: {tmp_path / 'nope'}: no such directory\n"


def _edit(run_dir: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    change(summary)
    path.write_text(json.dumps(summary))


# The soak's memory section -------------------------------------------------------------------


def test_growth_per_minute_is_a_least_squares_slope_after_the_warm_up() -> None:
    """A line of 2 KiB a second fits to 120 KiB a minute whatever the noise around it; a level
    second half reads near zero; missing samples are skipped; too few points: no figure."""
    t = [5.0 * i for i in range(73)]  # 6 minutes, every 5 s
    noise = [(-1) ** i * 40 for i in range(73)]
    rising = [30_000 + 2 * ti + n for ti, n in zip(t, noise, strict=True)]  # KiB
    rising[10] = None  # type: ignore[call-overload]  # a sample Redis did not answer
    fig = memwatch.figures(t, rising, memwatch.fit_from_s(360), memwatch.KIB)  # type: ignore[arg-type]
    assert fig["samples"] == 72
    assert fig["growth_kib_per_min"] == pytest.approx(120, abs=2)
    assert fig["late_growth_kib_per_min"] == pytest.approx(120, abs=8)
    assert fig["start_mib"] == pytest.approx(30_040 / 1024, abs=0.01)
    assert fig["warm_mib"] == pytest.approx((30_000 + 120 + 40) / 1024, abs=0.01)  # at 60 s
    levelled = [30_000 + min(ti, 180) * 2 for ti in t]  # grows 3 minutes, then flat
    fig = memwatch.figures(t, levelled, 60, memwatch.KIB)  # type: ignore[arg-type]
    assert fig["growth_kib_per_min"] > 20 and fig["late_growth_kib_per_min"] == 0
    assert memwatch.slope_per_min([(0, 1), (1, 2)]) is None
    assert memwatch.figures([1.0, 2.0], [None, None], 0, 1) == {"samples": 0}
    assert memwatch.every_s(5, 1800) == 5 and memwatch.every_s(5, 24) == 0.8
    assert memwatch.fit_from_s(1800) == 60 and memwatch.fit_from_s(30) == 10


def soak_run(run_dir: Path) -> dict[str, Any]:
    """A run of the soak alone, with its memory samples: two processes and Redis."""
    faults = [
        {"kind": "client-kill", "label": "CLIENT KILL TYPE normal + pubsub", "start_s": 10 + 60 * k,
         "end_s": 10 + 60 * k} if k % 3 == 0 else
        {"kind": "restart", "label": "Redis restarted", "start_s": 10 + 60 * k,
         "end_s": 11 + 60 * k} if k % 3 == 1 else
        {"kind": "blackhole", "label": "SIGSTOP 0.5s", "start_s": 10 + 60 * k,
         "end_s": 10.5 + 60 * k}
        for k in range(10)
    ]  # fmt: skip
    sc = scenario("soak", "Soak", faults, [row("redis-bus", "prodcons")])
    t = [5.0 * i for i in range(121)]
    rss = {"bus-w1": [35_000 + int(ti / 60 * 80) for ti in t], "web/1": [40_000 for _ in t]}
    used = [2_000_000 if i % 12 else None for i in range(len(t))]
    samples = memwatch.Samples(5.0, t, rss, {"bus-w1": 4242, "web/1": 4343},  # type: ignore[arg-type]
                               {"bus-w1": "redis-bus worker", "web/1": "redis-bus web worker"},
                               used, list(used))  # type: ignore[arg-type]  # fmt: skip
    sc["memory"], sc["redis_timeout_s"] = samples.summary(60.0), 2
    summary = {**make_summary(), "scenarios": [sc], "checks": []}
    make_run(run_dir, summary)
    series = json.loads((run_dir / "series.json").read_text())
    series["scenarios"]["soak"]["memory"] = samples.series()
    (run_dir / "series.json").write_text(json.dumps(series))
    return summary


def test_a_soak_report_has_the_memory_table_and_plot(tmp_path: Path) -> None:
    """Every process's RSS at start, after the warm-up, at the end, its growth per minute (the
    worker's 80 KiB a minute found again), Redis's memory, and the plot of the samples."""
    soak_run(tmp_path)
    md = report.write_report(tmp_path).read_text(encoding="utf-8")
    section = md[md.index("### Memory") :]
    assert "Sampled every 5.00 s (121 samples)" in section
    assert "from 60.0 s on" in section and "Redis's `timeout` was 2 s." in section
    lines = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| `")}
    assert lines["| `bus-w1`"] == (
        "| `bus-w1` | redis-bus worker | 4242 | 34.18 | 34.26 | 34.96 | 34.96 | +80.0 | +80.0 |"
    )
    assert lines["| `web/1`"].endswith("| 39.06 | 39.06 | 39.06 | 39.06 | +0.0 | +0.0 |")
    assert f"| `Redis used_memory` | INFO memory | {DASH} | 1.91 |" in section
    assert "![Memory of every process over the run of soak](memory-soak.png)" in section
    data = (tmp_path / "memory-soak.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    # thirty faults are not thirty labels on the timeline: lines by kind, named in the legend
    assert (tmp_path / "timeline-soak.png").stat().st_size > 20_000
    handles = plots.fault_handles(json.loads((tmp_path / "summary.json").read_text())
                                  ["scenarios"][0]["faults"])  # fmt: skip
    assert [h.get_label() for h in handles] == [
        "CLIENT KILL TYPE normal + pubsub (x4)",
        "Redis restarted (x3)",
        "SIGSTOP 0.5s (x3)",
    ]


def test_a_malformed_memory_section_is_named(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    soak_run(tmp_path)
    _edit(tmp_path, lambda s: s["scenarios"][0]["memory"]["processes"][0].pop("role"))
    assert report.main([str(tmp_path)]) == 2
    assert "summary.json scenarios[0].memory.processes[0]: 'role' is missing" in (
        capsys.readouterr().err
    )


def test_a_long_timeline_is_drawn_in_coarser_bins() -> None:
    """Half-second rates over a soak's half hour would fill the panel solid: past 5 minutes
    the counts are summed into 5 s bins (whole bins only); a short run is left as it is."""
    row_ = {"system": "redis-bus", "mode": "prodcons", "consumers": 2, "accepted": [10] * 1401,
            "failed": [0] * 1400 + [7], "delivered": [10] * 1401}  # fmt: skip
    long = {"faults": [], "t": [i * BIN_S for i in range(1401)], "rows": {"a": row_}}
    coarse = plots.coarser(long, BIN_S)
    assert coarse["t"][:3] == [0.0, 5.0, 10.0] and len(coarse["t"]) == 140
    assert coarse["rows"]["a"]["accepted"] == [100] * 140
    assert sum(coarse["rows"]["a"]["failed"]) == 0  # the last, partial bin is left out
    short = {**long, "t": long["t"][:600]}
    assert plots.coarser(short, BIN_S) is short


TIMED_OUT = ("handler failed on attempt 3: producer.errors.TimeLimitExceeded: the handler timed "
             "out: still running 2.1 s after it started, past its limit of 2 s")  # fmt: skip
CRASHED = ("worker bus-w2-2 stopped before settling attempt 3 (it crashed, was killed or lost "
           "Redis while the handler ran), its last of BUS_MAX_ATTEMPTS=3")  # fmt: skip


def test_outcomes_by_fate_tell_dead_letters_by_their_reason() -> None:
    """Each accepted message counts under its fate once: handled, dead-lettered by reason
    class, stranded or lost; a refused send counts nowhere."""
    sent = [{"lid": f"n{i}"} for i in range(5)] + [
        {"lid": "h1", "fate": "hang"}, {"lid": "h2", "fate": "hang"},
        {"lid": "d1", "fate": "die"}, {"lid": "d2", "fate": "die"},
    ]  # fmt: skip
    acc = {s["lid"] for s in sent}
    dead = {"h1": TIMED_OUT, "h2": CRASHED, "d1": CRASHED, "n4": "rejected: no"}
    out = fates.outcomes(sent, acc - {"n3"}, {"n0", "n1", "n2"}, dead, {"d2"})
    assert out["none"] == {"accepted": 4, "handled": 3, "dead_lettered": {"other": 1},
                           "stranded": 0, "lost": 0,
                           "reasons": {"other": "rejected: no"}}  # fmt: skip
    assert out["hang"]["dead_lettered"] == {"crashed": 1, "timed out": 1}
    assert out["die"]["dead_lettered"] == {"crashed": 1} and out["die"]["stranded"] == 1
    assert fates.expected_ends(out, "hang") == (1, 2)
    assert fates.expected_ends(out, "die") == (1, 2)
    assert fates.reason_class("worker w stopped before settling attempt 1") == "other"
    # A redelivery with a higher attempt is explained; one with the same attempt is not.
    assert fates.explained_duplicates(
        {"a": [(2.0, 2), (1.0, 1)], "b": [(1.0, 1)], "c": [(1.0, 1), (1.5, 1), (3.0, 2)]}
    ) == (3, 2)


def slow_handlers(**changed: Any) -> dict[str, Any]:
    """A slow-handlers scenario: poisoned messages all dead-lettered as their fate says."""
    poisoned = {
        "none": {"accepted": 196, "handled": 196, "dead_lettered": {}, "stranded": 0, "lost": 0,
                 "reasons": {}},
        "hang": {"accepted": 2, "handled": 0, "dead_lettered": {"timed out": 2}, "stranded": 0,
                 "lost": 0, "reasons": {"timed out": TIMED_OUT}},
        "die": {"accepted": 2, "handled": 0, "dead_lettered": {"crashed": 2}, "stranded": 0,
                "lost": 0, "reasons": {"crashed": CRASHED}},
    }  # fmt: skip
    r = row("redis-bus", "prodcons", 2, accepted=200, delivered=196, dead_lettered=4,
            duplicated=1, fates=poisoned, duplicates_explained=1,
            handlers_met={"die": 6, "hang": 6})  # fmt: skip
    r.update(changed)
    r["notes"] = rows.notes(r, 0)
    sc = scenario("slow-handlers", "Slow handlers", [], [r])
    sc.update(baseline=False, processes=3,
              restarts={"bus-w1": {"exit code 1": 2}, "bus-w2": {"exit code 1": 4}},
              inhand={"every_s": 0.5, "samples": 33, "limit_ms": 2000, "max_age_ms": 1940,
                      "workers": {}})  # fmt: skip
    return sc


def test_a_poisoned_run_is_checked_and_reported(tmp_path: Path) -> None:
    """Its checks pass when every poisoned message ended as its fate says, and fail naming what
    did not; the report tells the fates, the restarts and the oldest message in hand, and
    draws the in-hand panel; its latency is kept out of the calm comparison."""
    sc = slow_handlers()
    verdicts = {c["name"]: c["ok"] for c in checks.evaluate({"scenarios": [sc]})}
    assert verdicts == {
        "redis-bus prodcons: accounting complete": True,
        "redis-bus prodcons: nothing refused was delivered": True,
        "redis-bus prodcons: at-least-once lost nothing": True,
        "redis-bus prodcons: every message marked to hang ended dead-lettered (timed out)": True,
        "redis-bus prodcons: every message marked to end its process ended dead-lettered "
        "(crashed)": True,
        "redis-bus prodcons: every duplicate was in hand when a worker process ended": True,
        "no message stayed in a handler's hands past its time limit": True,
        "every process a handler ended was restarted by its supervisor": True,
    }
    bad = slow_handlers(duplicates_explained=0, handlers_met={"die": 7})
    bad["rows"][0]["fates"]["hang"]["dead_lettered"] = {"timed out": 1, "crashed": 1}
    bad["inhand"]["max_age_ms"] = 9000
    failed = [c for c in checks.evaluate({"scenarios": [bad]}) if not c["ok"]]
    assert [c["name"].split(": ")[-1] for c in failed] == [
        "every message marked to hang ended dead-lettered (timed out)",
        "every duplicate was in hand when a worker process ended",
        "no message stayed in a handler's hands past its time limit",
        "every process a handler ended was restarted by its supervisor",
    ]
    assert failed[0]["detail"].startswith("1 of 2 dead-lettered timed out; 1 for another reason")

    summary = make_summary()
    summary["scenarios"] = [summary["scenarios"][0], sc]
    make_run(tmp_path, summary)
    series = json.loads((tmp_path / "series.json").read_text())
    t = [i * 0.5 for i in range(33)]
    ages = [int(1900 * ((i % 5) / 4)) for i in range(33)]
    series["scenarios"]["slow-handlers"]["inhand"] = {
        "every_s": 0.5, "t": t, "oldest_age_ms": {"bus-w1": ages, "bus-w2": [None] * 33},
        "abandoned": {"bus-w1": [0] * 33, "bus-w2": [None] * 33}, "limit_ms": 2000,
        "process_ends_s": [2.4, 7.5],
    }  # fmt: skip
    (tmp_path / "series.json").write_text(json.dumps(series))
    md = report.write_report(tmp_path).read_text(encoding="utf-8")
    assert "Marked to hang: 2 accepted, 0 handled, dead-lettered timed out: 2" in md
    assert "Marked to end its process: 2 accepted, 0 handled, dead-lettered crashed: 2" in md
    assert "1 of the 1 extra deliveries came with a higher attempt" in md
    assert "(`--processes 3`): `bus-w1` 2 (exit code 1: 2); `bus-w2` 4 (exit code 1: 4)" in md
    assert "Oldest message in a handler's hands: at most 1.94 s (time limit 2 s" in md
    assert "none from the runner: the handlers are the fault" in md
    assert "(`mixed`)" in md  # the calm scenarios compared: slow-handlers is not one
    tall = struct.unpack(">II", (tmp_path / "timeline-slow-handlers.png").read_bytes()[16:24])
    calm = struct.unpack(">II", (tmp_path / "timeline-mixed.png").read_bytes()[16:24])
    assert tall[1] == calm[1]  # two panels each: mixed's two modes; prodcons and in hand
