"""The load-test runner, end to end: the quick suite keeps redis-bus's word under every fault,
the faults really bite (a cluster shard's failover included), the baseline is accounted for,
and Ctrl-C leaves nothing running.

These run ``python -m loadtest`` exactly as a user would (real redis-server, gunicorn, daemons
and locust, all started by the runner) and read the ``summary.json`` it writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness.waits import wait_for
from loadtest.runner import run as runner
from loadtest.runner import scenarios
from tests.procs import ROOT

QUICK_SUITE_S = 460  # bound on the quick suite's run, which the first test's setup waits for
pytestmark = [pytest.mark.slow, pytest.mark.timeout(QUICK_SUITE_S + 30)]

QUICK = [
    "mixed",
    "idle-timeout",
    "client-kill",
    "restart",
    "blackhole",
    "worker-crash",
    "cluster-failover",
    "slow-subscriber",
    "slow-handlers",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    """One run of the quick suite for the whole module: its summary, directory and output."""
    out = tmp_path_factory.mktemp("quick")
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "run", "all", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_SUITE_S,
    )
    text = proc.stdout + proc.stderr
    assert (out / "summary.json").exists(), text[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == (0 if summary["ok"] else 1), text[-3000:]
    return summary, out, text


def scenario(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["scenarios"] if s["name"] == name)


def rows(summary: dict[str, Any], name: str, system: str, mode: str) -> list[dict[str, Any]]:
    return [
        r for r in scenario(summary, name)["rows"] if r["system"] == system and r["mode"] == mode
    ]


def test_quick_suite_passes_every_check(quick_run: tuple[dict[str, Any], Path, str]) -> None:
    """Every scenario ran, every check passed, and the report has what a reader needs."""
    summary, out, text = quick_run
    assert [s["name"] for s in summary["scenarios"]] == QUICK
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert not failed, failed
    assert summary["ok"] and "every check passed" in text
    report = (out / "report.md").read_text()
    for name in QUICK:
        assert (out / f"timeline-{name}.png").stat().st_size > 10_000
        assert (out / "locust" / f"{name}.html").exists()
        assert name in report


def test_at_least_once_loses_nothing_under_any_fault(
    quick_run: tuple[dict[str, Any], Path, str],
) -> None:
    """redis-bus's list mode: every accepted message was handled, in every scenario (but the
    messages marked to hang or to end their process: dead-lettered)."""
    summary = quick_run[0]
    for name in QUICK:
        for row in rows(summary, name, "redis-bus", "prodcons"):
            assert row["accepted"] > 0, (name, row)
            poisoned = sum(f["accepted"] for fate, f in row.get("fates", {}).items()
                           if fate != "none")  # fmt: skip
            assert row["delivered"] == row["accepted"] - poisoned, (name, row)
            assert row["dead_lettered"] == poisoned, (name, row)
            assert row["lost"] == row["stranded"] == row["phantom"] == 0, (name, row)


def test_pubsub_losses_are_counted_exactly(quick_run: tuple[dict[str, Any], Path, str]) -> None:
    """Every redis-bus subscriber's own count of lost messages equals what it missed: sent
    (accepted, or unknown: the sequence number was used) minus received."""
    summary = quick_run[0]
    for name in QUICK:
        for row in rows(summary, name, "redis-bus", "pubsub"):
            assert row["per_consumer"], (name, row)
            for sub in row["per_consumer"]:
                assert sub["counted_lost"] == sub["missed"], (name, sub)
            assert row["lost"] == row["expected"] - row["delivered"]
            assert row["duplicated"] == 0, (name, row)


def test_idle_gaps_longer_than_the_timeout_are_invisible(
    quick_run: tuple[dict[str, Any], Path, str],
) -> None:
    """Redis closed every idle pooled connection between bursts: no client saw an error."""
    scn = scenario(quick_run[0], "idle-timeout")
    assert scn["faults"][0]["label"] == "CONFIG SET timeout 2"
    for row in scn["rows"]:
        if row["system"] == "redis-bus":
            assert row["accepted"] > 0 and row["http_errors"] == 0, row
            assert row["rejected"] == row["unknown"] == 0, row


def test_the_faults_bite(quick_run: tuple[dict[str, Any], Path, str]) -> None:
    """Each fault really happened to the processes: reconnects after kills and restarts, sends
    refused or unknown in the black hole, a worker killed with a message in its hands, a slow
    subscriber cut off. A fault that did nothing would make the other checks meaningless."""
    summary = quick_run[0]
    for name in ("client-kill", "restart", "blackhole"):
        for mode in ("prodcons", "pubsub"):
            (row,) = rows(summary, name, "redis-bus", mode)
            assert row["reconnects"] > 0, (name, row)
    for mode in ("prodcons", "pubsub"):
        (row,) = rows(summary, "blackhole", "redis-bus", mode)
        assert row["rejected"] + row["unknown"] > 0, row
    crash = scenario(summary, "worker-crash")["faults"][0]["detail"]
    assert all(crash["in_hand"].values()), crash  # each was killed holding a message
    # at-least-once: the reaper gave it to the survivor; the others lost it with the process.
    assert crash["in_hand_deliveries"] == {"bus-w1": 1, "bus-amo-w1": 0, "baseline-w1": 0}
    (amo,) = rows(summary, "worker-crash", "redis-bus at-most-once", "prodcons")
    (naive,) = rows(summary, "worker-crash", "baseline", "prodcons")
    assert amo["lost"] >= 1 and naive["lost"] == 1, (amo, naive)  # a batch; the one in hand
    (slow_row,) = rows(summary, "slow-subscriber", "redis-bus", "pubsub")
    slow = next(p for p in slow_row["per_consumer"] if p["slow"])
    assert slow["missed"] > 0 and slow["counted_lost"] == slow["missed"], slow


def test_slow_handlers_cost_a_time_limit_or_a_process_and_end_dead_lettered(
    quick_run: tuple[dict[str, Any], Path, str],
) -> None:
    """1% of the messages hang their handler, 1% end its process: each of those ends
    dead-lettered for its reason after BUS_MAX_ATTEMPTS attempts, every process a handler ended
    was restarted, every other message was handled, and no message stayed in a handler's hands
    much past the time limit, though the hangs reached it."""
    scn = scenario(quick_run[0], "slow-handlers")
    (row,) = rows(quick_run[0], "slow-handlers", "redis-bus", "prodcons")
    fates = row["fates"]
    for fate, why in (("hang", "timed out"), ("die", "crashed")):
        assert fates[fate]["accepted"] >= 1, fates
        assert fates[fate]["dead_lettered"] == {why: fates[fate]["accepted"]}, fates
    assert "BUS_MAX_ATTEMPTS=3" in fates["die"]["reasons"]["crashed"], fates
    assert fates["none"]["handled"] == fates["none"]["accepted"], fates
    assert row["duplicates_explained"] == row["duplicated"], row
    died = row["handlers_met"]["die"]
    # BUS_MAX_ATTEMPTS=3, and a first attempt that crashed beside others in its worker's list
    # goes back all the same (which one killed it is not known): one more delivery, alone
    # (docs/how-it-works.md, Poison messages). So 3 to 4 meetings each.
    assert fates["die"]["accepted"] <= died <= (3 + 1) * fates["die"]["accepted"], row
    assert sum(n.get("exit code 1", 0) for n in scn["restarts"].values()) == died, scn
    limit, oldest = scn["inhand"]["limit_ms"], scn["inhand"]["max_age_ms"]
    assert limit == 2000 and limit / 2 < oldest <= limit + 1000, scn["inhand"]


def test_a_cluster_shard_fails_over_under_load(
    quick_run: tuple[dict[str, Any], Path, str],
) -> None:
    """On a 3-shard cluster the replica of billing's shard took over mid-stream; the worker of
    that queue and both subscribers (the channel lives on that shard) followed it, and the
    list mode, through the web and straight from the Producer, lost nothing."""
    scn = scenario(quick_run[0], "cluster-failover")
    assert scn["cluster_shards"] == 3 and not scn["baseline"]
    (fault,) = scn["faults"]
    detail = fault["detail"]
    assert detail["new_primary"] != detail["old_primary"], detail
    assert 0 < detail["promoted_s"] <= detail["agreed_s"], detail
    assert 0 < fault["start_s"] < scn["traffic_s"], fault
    for system in ("redis-bus", "redis-bus direct"):
        (row,) = rows(quick_run[0], "cluster-failover", system, "prodcons")
        assert row["dest"] == "orders,default,billing" and row["consumers"] == 3, row
        assert row["accepted"] > 0 and row["delivered"] == row["accepted"], row
        assert row["lost"] == row["stranded"] == row["duplicated"] == 0, row
    (prodcons,) = rows(quick_run[0], "cluster-failover", "redis-bus", "prodcons")
    assert prodcons["reconnects"] >= 1, prodcons  # billing's worker, its pop UNBLOCKED
    (pubsub,) = rows(quick_run[0], "cluster-failover", "redis-bus", "pubsub")
    assert pubsub["reconnects"] >= 2, pubsub  # each subscriber followed the channel
    assert all(p["counted_lost"] == p["missed"] for p in pubsub["per_consumer"]), pubsub


def test_the_baseline_ran_and_is_accounted_for(
    quick_run: tuple[dict[str, Any], Path, str],
) -> None:
    """The naive consumers ran under every scenario and every message they were sent is
    classified: delivered, lost or stranded, and each delivery matched a send."""
    summary = quick_run[0]
    for name in QUICK:
        base = [r for r in scenario(summary, name)["rows"] if r["system"] == "baseline"]
        if not scenario(summary, name)["baseline"]:  # the cluster: the naive app cannot run
            assert base == [], name
            continue
        assert {r["mode"] for r in base} == set(scenario(summary, name)["modes"]), name
        for row in base:
            assert row["sent"] > 0 and row["complete"], (name, row)
            classified = row["delivered"] + row["lost"] + row["stranded"] + row["dead_lettered"]
            assert classified == row["expected"], (name, row)


def test_the_soak_stays_out_of_the_quick_suite() -> None:
    """The soak runs in the full suite only (its quick form when named); a fault a minute in
    turn, each 40% into a burst; shortened, it keeps one fault of each kind."""
    assert "soak" not in [s.name for s in scenarios.select("all", quick=True)]
    assert scenarios.select("all", quick=False)[-1].name == "soak"
    soak = scenarios.BY_NAME["soak"]
    assert soak.duration_s(quick=False) == 1800 and soak.duration_s(quick=True) == 180
    full = soak.faults_for(1800)
    assert len(full) == 30 and [f.kind for f in full[:4]] == [
        "client-kill",
        "restart",
        "blackhole",
        "client-kill",
    ]
    assert [round(f.at * 1800) for f in full[:3]] == [10, 70, 130]
    assert soak.shape_args_for(1800) == ("--burst", "25", "--idle", "5")
    short = soak.faults_for(20)
    assert [f.kind for f in short] == ["client-kill", "restart", "blackhole"]
    burst, idle = soak.rotation.cycle_s(20)  # type: ignore[union-attr]
    assert idle > scenarios.SOAK_TIMEOUT_S and burst > 0
    blackhole = next(f for f in full if f.kind == "blackhole")
    assert blackhole.hold(1800) == scenarios.SOAK_FREEZE_S < float(runner.SETTINGS[
        "BUS_SOCKET_TIMEOUT_S"])  # fmt: skip


def test_a_short_soak_accounts_and_reports_every_process_memory(tmp_path: Path) -> None:
    """The soak shortened to 20 s (one fault of each kind, idle gaps past Redis's 2 s
    timeout): every check passes, the faults bite, and the report has every process's RSS in
    a table and a plot, with a growth per minute."""
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "run", "soak", "--duration", "20", "--out",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    (scn,) = summary["scenarios"]
    assert scn["name"] == "soak" and scn["redis_timeout_s"] == 2
    assert [f["kind"] for f in scn["faults"]] == ["client-kill", "restart", "blackhole"]
    for mode in ("prodcons", "pubsub"):
        (row,) = rows(summary, "soak", "redis-bus", mode)
        assert row["accepted"] > 0 and row["complete"] and row["reconnects"] > 0, row
        assert row["lost"] == row["duplicated"] == 0 or mode == "pubsub", row
    memory = scn["memory"]
    procs = {p["name"]: p for p in memory["processes"]}
    expected = {"web", "web/1", "web/4", "bus-w1", "bus-w2", "bus-s1", "bus-s2", "baseline-web",
                "baseline-web/1", "baseline-w1", "baseline-s2", "locust"}  # fmt: skip
    assert expected <= set(procs), sorted(procs)
    assert procs["bus-w1"]["role"] == "redis-bus worker", procs["bus-w1"]
    for p in procs.values():
        assert p["samples"] >= 10 and p["growth_kib_per_min"] is not None, p
        assert 10 < p["start_mib"] < 500, p
    assert memory["redis"]["used_memory"]["samples"] >= 10, memory["redis"]
    report = (tmp_path / "report.md").read_text()
    assert "### Memory" in report and "| `bus-w1` | redis-bus worker |" in report
    assert "![Memory of every process over the run of soak](memory-soak.png)" in report
    assert (tmp_path / "memory-soak.png").stat().st_size > 20_000
    series = json.loads((tmp_path / "series.json").read_text())["scenarios"]["soak"]["memory"]
    assert len(series["t"]) == memory["samples"] == len(series["rss_kib"]["bus-w1"])


def test_ctrl_c_mid_scenario_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGINT while Redis is frozen in the black hole: the runner stops every process it
    started (each pid it recorded, and any process carrying a marker in its environment, such
    as gunicorn's workers), thaws Redis first, and exits 130."""
    marker = f"LOADTEST_TEST_MARK_{uuid.uuid4().hex}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "run", "blackhole", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env={**os.environ, marker: "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(runner.stdout or ()), daemon=True).start()
    try:
        wait_for(lambda: any(" traffic " in line for line in lines), 60, "traffic to start")
        redis_pid = next(pid for pid, name in started(tmp_path) if name == "redis")
        wait_for(lambda: state(redis_pid) == "T", 10, "the black hole (Redis stopped)")
        assert len(marked(marker)) >= 10, marked(marker)  # the stack, gunicorn's workers...
        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 130, "".join(lines)
    finally:
        if runner.poll() is None:  # a failed step above: let it clean up, then insist
            runner.terminate()
            try:
                runner.wait(30)
            except subprocess.TimeoutExpired:
                runner.kill()
    wait_for(lambda: not marked(marker), 5, "every marked process to be gone")
    left = [(pid, name) for pid, name in started(tmp_path) if state(pid) not in (None, "Z")]
    assert not left, left
    assert "interrupted" in "".join(lines)


def started(out: Path) -> list[tuple[int, str]]:
    """Every (pid, name) the runner recorded as started."""
    found = []
    for pids in out.glob("logs/*/pids"):
        for line in pids.read_text().splitlines():
            pid, name = line.split(maxsplit=1)
            found.append((int(pid), name))
    return found


def state(pid: int) -> str | None:
    """A process's state letter (R, S, T, Z...), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def marked(marker: str) -> dict[int, str]:
    """Live processes whose environment carries ``marker``: pid -> state. (redis-server writes
    its title over its environment, hence also the pid list above.)"""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        st = state(int(entry.name))
        if marker.encode() in environ and st not in (None, "Z"):
            found[int(entry.name)] = st
    return found


def test_an_out_directory_used_before_gets_fresh_logs(tmp_path: Path) -> None:
    """A scenario's processes append to their logs and its checks read them (the supervisors'
    restarts, say): run again into the same --out, it starts from empty logs, not from the
    earlier run's lines (which once made slow-handlers count 32 restarts for 26 crashes)."""
    stale = tmp_path / "logs" / "slow-handlers"
    stale.mkdir(parents=True)
    (stale / "bus-w1.log").write_text("WARNING worker bus-w1-1 ended (exit code 1)\n")
    (stale / "pids").write_text("123 bus-w1\n")
    logs = runner.fresh_logs(tmp_path, "slow-handlers")
    assert logs == stale and logs.is_dir() and list(logs.iterdir()) == []
    assert runner.fresh_logs(tmp_path, "mixed").is_dir()  # a first run: made
