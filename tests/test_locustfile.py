"""loadtest/locustfile.py and loadtest/shapes against a real stack: redis-server, gunicorn with
two workers, a queue worker and a subscriber (both with the load-test handler), and locust in a
subprocess (it monkey-patches with gevent, so never in this process). First, the locust-free
parts it is built on: the bus figures' deltas and the outcome rules."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import requests

from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer, redis_binary
from loadtest.harness.waits import wait_for
from loadtest.ledger import handlers, records
from loadtest.users.busfigures import Deltas
from loadtest.users.sending import baseline_outcome, bus_outcome
from producer.store.envelope import new as new_envelope
from tests.conftest import QUICK_ENV
from tests.procs import ROOT, Proc, daemon_cmd, get_json, project_env


def proc(role: str, ident: str, started_ms: int, **counts: int) -> dict[str, Any]:
    """One process's row of /api/stats."""
    return {"role": role, "id": ident, "started_ms": started_ms, **counts}


def overview(*processes: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """An /api/stats answer with one queue."""
    return {"processes": list(processes), "queues": {"default": {"depth": depth, "in_flight": 0}}}


def test_bus_figures_are_deltas_per_process_across_restarts() -> None:
    """Counts before the start do not count; a process born during the test counts from 0; one
    restarted under the same id (counters back to 0) keeps what it did before; one whose stats
    expired keeps its last counts; latency percentiles come from the buckets' deltas."""
    start = overview(proc("web", "a", 1, pushed=100), proc("worker", "w", 1, handled=90),
                     depth=10)  # fmt: skip
    deltas = Deltas(start)
    figures = deltas.update(overview(
        proc("web", "a", 1, pushed=130), proc("locust", "l", 5, pushed=5),
        proc("worker", "w", 1, handled=120, lat_le_1=20, lat_le_5=10), depth=20,
    ))  # fmt: skip
    assert figures["prodcons"]["pushed"] == 35 and figures["prodcons"]["handled"] == 30
    assert figures["prodcons"]["unaccounted"] == 35 - 30 - (20 - 10)
    assert figures["prodcons"]["p50"] == 1 and figures["prodcons"]["p99"] == 5
    # The locust process's stats expired; the worker restarted under the same id.
    later = overview(proc("web", "a", 1, pushed=140), proc("worker", "w", 9, handled=15), depth=10)
    figures = deltas.update(later)
    assert figures["prodcons"]["pushed"] == 45  # 40 by the web, 5 by the expired locust
    assert figures["prodcons"]["handled"] == 30 + 15
    assert figures["prodcons"]["unaccounted"] == 0


def test_outcome_rules() -> None:
    """bus: 202 accepted with the answer's ids; 4xx rejected; 503 as its body says; anything
    else unknown. Baseline: 2xx accepted, anything else unknown. Non-2xx are locust failures."""
    body = b'{"id": "i", "queue": "default", "depth": 3, "src": "s", "seq": 7}'
    fields, failure = bus_outcome(202, body, None)
    assert fields == {"st": 202, "out": "accepted", "id": "i", "src": "s", "seq": 7, "rc": None}
    assert failure is None
    assert bus_outcome(202, b'{"receivers": 2}', None)[0]["rc"] == 2
    assert bus_outcome(404, b'{"error": "unknown queue"}', None) == (
        {"st": 404, "out": "rejected", "err": "unknown queue"}, "unknown queue")  # fmt: skip
    for said in ("rejected", "unknown"):
        answer = json.dumps({"error": "Redis down", "outcome": said}).encode()
        assert bus_outcome(503, answer, None)[0]["out"] == said
    assert bus_outcome(500, b"<html>", None)[0]["out"] == "unknown"
    assert bus_outcome(0, None, ConnectionRefusedError("refused"))[0] == {
        "st": 0, "out": "unknown", "err": "refused"}  # fmt: skip
    assert baseline_outcome(200, None) == ({"st": 200, "out": "accepted"}, None)
    assert baseline_outcome(500, None)[0]["out"] == "unknown"


def test_fates_mark_their_shares_evenly_and_never_the_same_message() -> None:
    """1% hang and 1% die: exactly 10 of each in 1000, 50 apart, never both; none by default."""
    fates = records.Fates(0.01, 0.01)
    marks = {n: f for n in range(1, 1001) if (f := fates.next())}
    assert [n for n, f in marks.items() if f == "hang"] == list(range(100, 1001, 100))
    assert [n for n, f in marks.items() if f == "die"] == list(range(50, 1000, 100))
    assert not any(records.Fates().next() for _ in range(1000))
    assert records.payload("a-1", 0, "hang") == {"lid": "a-1", "fate": "hang"}
    assert records.fate_of({"lid": "a-1", "fate": "die"}) == "die"
    assert records.fate_of({"lid": "a-1", "fate": "explode"}) is None
    assert records.fate_of(b'{"fate": "die"}') is None  # only the bus's decoded payload counts


def _ledger_env(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv(records.ENV_FILE, str(path))
    monkeypatch.setenv(records.ENV_WHO, "w")
    monkeypatch.setenv(records.ENV_START, "1")
    monkeypatch.setattr(handlers, "_recorder", None)


def test_the_ledger_handler_hangs_on_a_hang_and_handles_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message marked "hang" gets a doomed line and no got line (here the hang is cut short);
    an unmarked one is handled as always."""
    _ledger_env(monkeypatch, tmp_path / "w.jsonl")
    monkeypatch.setattr(records, "HANG_S", 0.01)
    handlers.record(new_envelope({"lid": "l-1", "fate": "hang"}))
    handlers.record(new_envelope({"lid": "l-2"}))
    lines = [(line["k"], line["lid"]) for line in records.read(tmp_path / "w.jsonl")]
    assert lines == [("start", "l-1"), ("doomed", "l-1"), ("start", "l-2"), ("got", "l-2")]


def test_the_ledger_handler_ends_its_process_on_a_die(tmp_path: Path) -> None:
    """A message marked "die": a doomed line with its attempt, then exit 1 at once."""
    ledger = tmp_path / "w.jsonl"
    code = (
        "from loadtest.ledger import handlers\n"
        "from producer.store.envelope import new\n"
        "handlers.record(new({'lid': 'l-9', 'fate': 'die'}).next_attempt())\n"
        "print('still alive')\n"
    )
    env = {**project_env("redis://127.0.0.1:1/0"), records.ENV_FILE: str(ledger),
           records.ENV_WHO: "w"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == records.EXIT_DIE and "still alive" not in done.stdout, done
    (line,) = records.read(ledger)
    assert (line["k"], line["lid"], line["fate"], line["att"]) == ("doomed", "l-9", "die", 2)


@dataclass
class Stack:
    """The bus under test, with the consumers' ledgers."""

    redis: RedisServer
    base: str  # http://127.0.0.1:<port>
    worker_ledger: Path
    subscriber_ledger: Path
    work: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module (each test tells its own messages apart by their lids)."""
    if importlib.util.find_spec("locust") is None or redis_binary() is None:
        pytest.fail("locust or redis-server is not installed: `make bootstrap` installs both")
    work = tmp_path_factory.mktemp("locustfile")
    server = RedisServer(work / "redis").start()
    port = free_port()
    procs: list[Proc] = []
    env = project_env(server.url, **QUICK_ENV)
    try:
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py", "web.wsgi:app"]
        procs.append(Proc(gunicorn, {**env, "BUS_WEB_BIND": f"127.0.0.1:{port}",
                                     "BUS_WEB_WORKERS": "2"}, work / "web.log"))  # fmt: skip
        ledgers = {}
        for kind, who in (("worker", "lw1"), ("subscriber", "ls1")):
            ledgers[kind] = work / f"{who}.jsonl"
            cmd = daemon_cmd(kind, "--handler", "loadtest.ledger.handlers:record", "--name", who)
            daemon_env = {**env, records.ENV_FILE: str(ledgers[kind]), records.ENV_WHO: who}
            procs.append(Proc(cmd, daemon_env, work / f"{who}.log"))
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            for p in procs:
                assert p.proc.poll() is None, p.log()
            stats = get_json(base + "/api/stats")
            return bool(stats) and (
                stats["channels"]["default"]["subscribers"] == 1
                and any(c["alive"] for c in stats["queues"]["default"]["consumers"])
            )

        wait_for(ready, 30, "gunicorn, a live worker and a subscriber", every_s=0.1)
        yield Stack(server, base, ledgers["worker"], ledgers["subscriber"], work)
    finally:
        for p in procs:
            p.stop()
        server.kill()


@dataclass
class Run:
    """One locust run: its exit code, output, ledger lines and request stats."""

    rc: int
    output: str
    ledger: list[dict[str, Any]]
    stats: dict[tuple[str, str], dict[str, Any]]  # (method, name) -> locust's entry

    def sent(self) -> list[dict[str, Any]]:
        return [line for line in self.ledger if line["k"] == "sent"]

    def phase(self, what: str) -> float:
        (t,) = [line["t"] for line in self.ledger if line["k"] == "phase" and line["what"] == what]
        return float(t)


def start_locust(
    stack: Stack, name: str, *args: str, files: str = "loadtest/locustfile.py"
) -> tuple[Proc, Path]:
    """``python -m locust -f files --host <bus> ...args`` with a ledger of its own."""
    ledger = stack.work / f"{name}.jsonl"
    env = project_env(stack.redis.url, **{records.ENV_FILE: str(ledger)})
    env.pop("LOADTEST_BASELINE_HOST", None)
    cmd = [sys.executable, "-m", "locust", "-f", files, "--host", stack.base,
           "--json-file", str(stack.work / name), *args]  # fmt: skip
    return Proc(cmd, env, stack.work / f"{name}.log"), ledger


def run_locust(stack: Stack, name: str, *args: str, files: str = "loadtest/locustfile.py") -> Run:
    """Run locust headless to its end (stopped at teardown if it hangs)."""
    proc, ledger = start_locust(stack, name, "--headless", *args, files=files)
    try:
        rc = proc.wait(40)
    finally:
        proc.stop()
    return finished(stack, name, proc, ledger, rc)


def finished(stack: Stack, name: str, proc: Proc, ledger: Path, rc: int) -> Run:
    stats_path = stack.work / f"{name}.json"
    entries = json.loads(stats_path.read_text()) if stats_path.exists() else []
    stats = {(e["method"], e["name"]): e for e in entries}
    lines = list(records.read(ledger)) if ledger.exists() else []
    return Run(rc, proc.log(), lines, stats)


def got_lines(path: Path, lids: set[str]) -> dict[str, dict[str, Any]]:
    """The consumer's ``got`` lines for ``lids``, by lid."""
    return {g["lid"]: g for g in records.read(path) if g["k"] == "got" and g["lid"] in lids}


def wait_delivered(path: Path, lids: set[str], what: str) -> dict[str, dict[str, Any]]:
    """The consumer's ``got`` lines once every one of ``lids`` has one."""

    def complete() -> dict[str, dict[str, Any]] | None:
        got = got_lines(path, lids)
        return got if len(got) == len(lids) else None

    return wait_for(complete, 10, f"every {what} lid in {path.name}")


def final_figures(output: str) -> dict[str, dict[str, int]]:
    """The counts of the final "redis-bus figures" block locust printed, per mode."""
    block = output[output.rindex("redis-bus figures since the test started") :]
    figures = {}
    for mode in ("prodcons", "pubsub"):
        line = re.search(rf"bus {mode}: (.*?);", block)
        assert line, block
        figures[mode] = {k: int(v) for v, k in _pairs(line[1])}
    return figures


def _pairs(text: str) -> list[tuple[str, str]]:
    return [
        (m[2], m[1].replace(" ", "_")) for m in re.finditer(r"([a-z -]+?) (-?\d+)(?:, |$)", text)
    ]


@pytest.mark.slow
def test_headless_run_records_every_send_and_the_bus_delivers_them(stack: Stack) -> None:
    """BusProdcons, BusPubsub and RedisPush for 4 s: exit 0; one accepted "sent" line per
    request with the answer's id/src/seq; the worker handled every prodcons lid and the
    subscriber received every pubsub lid; the bus's figures show in the log and, at the end,
    handled equal to pushed."""
    run = run_locust(
        stack, "headless", "-u", "4", "-r", "4", "-t", "4s", "--rate", "5", "--stop-timeout", "5",
        "--redis-url", stack.redis.url, "--bus-stats-interval", "1",
        "BusProdcons", "BusPubsub", "RedisPush",
    )  # fmt: skip
    assert run.rc == 0, run.output
    sent = run.sent()
    by_kind = Counter((s["mode"], s["via"]) for s in sent)
    assert by_kind[("prodcons", "http")] == run.stats[("POST", "/prodcons")]["num_requests"] > 0
    assert by_kind[("pubsub", "http")] == run.stats[("POST", "/pubsub")]["num_requests"] > 0
    lpush = run.stats[("LPUSH", "bus:{default}:pending")]
    assert by_kind[("prodcons", "redis")] == lpush["num_requests"] > 0
    assert all(e["num_failures"] == 0 for e in run.stats.values())
    assert {s["out"] for s in sent} == {"accepted"} and {s["err"] for s in sent} == {None}
    assert {s["sys"] for s in sent} == {"bus"} and {s["dest"] for s in sent} == {"default"}
    assert all(s["st"] == (202 if s["via"] == "http" else 0) for s in sent)
    assert all(re.fullmatch(r"[0-9a-f]{32}", s["id"]) and s["src"] and s["seq"] >= 1 for s in sent)
    assert all(s["rc"] == 1 for s in sent if s["mode"] == "pubsub")  # one subscriber heard each
    assert len({s["lid"] for s in sent}) == len(sent)
    assert run.phase("start") <= min(s["t0"] for s in sent)
    assert max(s["t1"] for s in sent) <= run.phase("stop")

    for mode, ledger in (("prodcons", stack.worker_ledger), ("pubsub", stack.subscriber_ledger)):
        mine = {s["lid"]: s for s in sent if s["mode"] == mode}
        for lid, got in wait_delivered(ledger, set(mine), mode).items():
            assert (got["id"], got["src"], got["seq"]) == (mine[lid]["id"], mine[lid]["src"],
                                                           mine[lid]["seq"])  # fmt: skip

    assert len(re.findall(r"/INFO/[\w.]+: bus prodcons: pushed", run.output)) >= 2
    figures = final_figures(run.output)
    pushed = by_kind[("prodcons", "http")] + by_kind[("prodcons", "redis")]
    assert figures["prodcons"]["pushed"] == figures["prodcons"]["handled"] == pushed, run.output
    assert figures["prodcons"]["unaccounted"] == 0
    published = by_kind[("pubsub", "http")]
    assert figures["pubsub"]["published"] == figures["pubsub"]["received"] == published
    assert figures["pubsub"]["lost"] == 0


@pytest.mark.slow
def test_tags_seed_runs_only_the_get_routes(stack: Stack) -> None:
    """``--tags seed`` with every user class: only SeedGet runs; each GET answers 303, counted
    as a success; nothing is written to the ledger but the phases."""
    run = run_locust(stack, "seed", "-u", "2", "-r", "2", "-t", "2s", "--rate", "5", "--tags",
                     "seed", "--bus-stats-interval", "0")  # fmt: skip
    assert run.rc == 0, run.output
    assert "tags select SeedGet" in run.output
    assert set(run.stats) == {("GET", "/prodcons"), ("GET", "/pubsub")}, run.stats
    assert sum(e["num_requests"] for e in run.stats.values()) > 0
    assert all(e["num_failures"] == 0 for e in run.stats.values())
    assert [line["k"] for line in run.ledger] == ["phase", "phase"]


@pytest.mark.slow
def test_bursts_shape_leaves_idle_gaps(stack: Stack) -> None:
    """Bursts with ``--burst 1 --idle 2`` for 5 s: two bursts of sends (t0 from the ledger),
    separated by a gap of about the idle time, and the shape ends the test at -t."""
    run = run_locust(
        stack, "bursts", "-u", "4", "-r", "4", "-t", "5s", "--rate", "5", "--stop-timeout", "5",
        "--burst", "1", "--idle", "2", "--bus-stats-interval", "0", "BusProdcons",
        files="loadtest/locustfile.py,loadtest/shapes/bursts.py",
    )  # fmt: skip
    assert run.rc == 0, run.output
    start = run.phase("start")
    times = sorted(s["t0"] - start for s in run.sent())
    gaps = [(a, b) for a, b in pairwise(times) if b - a > 1.0]
    assert len(gaps) == 1, times  # two bursts, one gap
    (end_first, start_second) = gaps[0]
    assert end_first < 2.0 and 2.5 <= start_second < 4.0, times  # the shape ticks every ~1 s
    assert start_second - end_first >= 1.5, times
    assert times[-1] < 5.0 and run.phase("stop") - start < 6.5
    # A user whose wait ends just as the shape stops it may be killed mid-request: "aborted".
    assert all(s["out"] == "accepted" or s["err"] == "aborted" for s in run.sent())


@pytest.mark.slow
def test_web_ui_serves_the_redis_bus_tab(stack: Stack) -> None:
    """Web UI mode (--autostart --autoquit 1 -t 3s): /stats/requests carries the bus's figures
    as the "redis-bus" extended stats, the index's template args declare the tab and its table
    and list the custom options; locust then stops and quits by itself."""
    ui = f"http://127.0.0.1:{free_port()}"
    proc, ledger = start_locust(
        stack, "webui", "--web-host", "127.0.0.1", "--web-port", ui.rsplit(":", 1)[1],
        "--autostart", "--autoquit", "1", "-t", "3s", "-u", "2", "-r", "2", "--rate", "5",
        "--bus-stats-interval", "1", "BusProdcons", "BusPubsub",
    )  # fmt: skip
    try:

        def figures() -> list[dict[str, Any]] | None:
            body = get_json(ui + "/stats/requests")
            if not body or body.get("state") != "running":
                return None
            (tab,) = [e for e in body["extended_stats"] if e["key"] == "redis-bus"]
            rows = {r["figure"]: r for r in tab["data"]}
            sent = rows.get("sent (pushed / published)")
            return tab["data"] if sent and sent["prodcons"] and sent["pubsub"] else None

        rows = wait_for(figures, 15, "the redis-bus figures in /stats/requests", every_s=0.2)
        assert rows[0]["figure"].startswith("deltas since the test started")
        assert {"handled / received", "unaccounted", "latency p99 ms"} <= {
            r["figure"] for r in rows
        }

        page = requests.get(ui + "/", timeout=5).text
        args = json.loads(re.search(r"window.templateArgs = (.*)", page)[1])  # type: ignore[index]
        assert args["extended_tabs"] == [{"title": "redis-bus", "key": "redis-bus"}]
        (table,) = args["extended_tables"]
        assert table["key"] == "redis-bus"
        assert [c["key"] for c in table["structure"]] == ["figure", "prodcons", "pubsub"]
        assert {"rate", "queue", "channel", "bus_stats_interval", "burst", "idle"} <= set(
            args["extra_options"]
        )
        assert proc.wait(20) == 0, proc.log()
    finally:
        proc.stop()
    assert "redis-bus figures since the test started" in proc.log()
    assert [line["k"] for line in records.read(ledger)].count("sent") > 0
