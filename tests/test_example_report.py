"""The articles' scenarios as examples that run: the Celery article's report workflow
(examples/report.py: five fetches of the stand-in API, their aggregate, a CSV, every minute)
and the RQ tutorial's depends_on pair (examples/depends_on.py), end to end on a real Redis and
worker. Their commands as the example's README shows them, against `make run`'s stack, are in
tests/test_example_commands.py."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from consumers import schedules
from examples import report
from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, keys
from producer.store.counts import read_balance
from producer.store.tracking import read_record
from tests.inproc import running
from tests.procs import ROOT, project_env
from tests.test_worker import make_worker

Q = report.QUEUE


@pytest.fixture
def stand_in() -> Iterator[str]:
    """The example's stand-in for the remote API, on a free loopback port: its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), report.StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def report_env(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, tmp_path: Path,
               r: redis.Redis) -> Path:  # fmt: skip
    """The worker's environment: make run's Redis stands as the session server; the CSVs in
    a directory of the test's own."""
    monkeypatch.setenv("BUS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("REPORT_OUT", str(tmp_path / "out"))
    monkeypatch.setattr(report, "_producer", None)
    return tmp_path / "out"


def expected_rows() -> list[list[str]]:
    repos = [repo for page in range(1, 6) for repo in report.page_of(page)]
    top = sorted(repos, key=lambda r: (-r["stars"], r["name"]))[:10]
    return [[str(i), r["name"], str(r["stars"]), r["language"]] for i, r in enumerate(top, 1)]


def test_a_report_fetches_five_pages_aggregates_and_writes_the_csv(
    settings: Settings, r: redis.Redis, stand_in: str, report_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("REPORT_API_URL", stand_in)
    with running(make_worker(settings, report.handle, queue=Q)):
        start = Producer.from_settings(settings).push({"step": "start"}, Q, track=True)
        done = wait_for(lambda: (read_record(r, Q, start.envelope.id) or {}).get("result"), 5,
                        "the start")  # fmt: skip
        csv_record = wait_for(lambda: (x := read_record(r, Q, done["csv"])) and x["final"] and x,
                              10, "the CSV step")  # fmt: skip
    assert csv_record["state"] == "handled", csv_record
    path = report_env / f"hot-repositories-{start.envelope.id}.csv"
    assert csv_record["result"] == {"path": str(path), "rows": 10}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [list(report.FIELDS), *expected_rows()]
    aggregate = read_record(r, Q, done["aggregate"])
    assert aggregate is not None and len(aggregate["after"]) == 5
    balance = read_balance(r, Q)
    assert (balance["pushed"], balance["acked"], balance["unaccounted"]) == (8, 8, 0)


def test_a_fetch_that_keeps_failing_ends_that_report_with_the_reason(
    settings: Settings, r: redis.Redis, report_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPORT_API_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    with running(make_worker(settings.replace(max_attempts=2), report.handle, queue=Q)):
        ids = report.start(Producer.from_settings(settings), "r1")
        wait_for(lambda: (read_record(r, Q, ids["csv"]) or {}).get("state") == "dead", 10,
                 "the CSV step ended")  # fmt: skip
    aggregate = read_record(r, Q, ids["aggregate"])
    assert aggregate is not None and aggregate["state"] == "dead"
    assert "which ended dead: handler failed on attempt 2" in aggregate["reason"]
    assert "Connection refused" in aggregate["reason"]
    written = read_record(r, Q, ids["csv"])
    assert written is not None and f"it waited for {ids['aggregate']}" in written["reason"]
    assert not report_env.exists() or not list(report_env.iterdir())
    assert r.llen(keys.dead(Q)) == 5 + 2  # the five fetches, the aggregate and the CSV


def test_the_schedule_sends_a_start_every_minute(settings: Settings) -> None:
    found = schedules.load(settings.replace(schedule_file=str(ROOT / "examples" / "report.toml"),
                                            queues=(Q,)))  # fmt: skip
    assert [(s.name, s.queue, s.cron, s.payload) for s in found] == [
        ("hot-repositories", Q, "* * * * *", {"step": "start"})]  # fmt: skip


def test_the_depends_on_pair_runs_in_one_command(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """``python -m examples.depends_on``: the count, then the report that waited for it."""
    env = project_env(redis_server.url, BUS_QUEUES="depends-on", REPORT_OUT=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "examples.depends_on"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("pushed ") and "(send the report: waits for" in lines[1]
    assert "handled {'url':" in lines[2] and "'words': 19}" in lines[2]
    assert "handled {'sent_to': 'ops@example.com', 'words': 19" in lines[3]
    (sent,) = tmp_path.glob("report-*.txt")
    assert (
        sent.read_text().startswith("To: ops@example.com\n") and "has 19 words" in sent.read_text()
    )
