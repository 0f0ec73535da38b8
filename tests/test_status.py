"""``python -m consumers status`` as a real process against real Redis: the tables, ``--json``,
and the exit status a probe reads (0 healthy, 1 unhealthy with one stderr line per problem,
2 usage, 3 Redis unreachable). Liveness runs on the quick settings: heartbeat TTL 3 s, a
subscriber's deadline 2 s (PING after 1 s of silence, PONG deadline 1 s), stats every 0.1 s.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from consumers.status import problems, render
from consumers.tables import table
from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, keys, make_client
from producer.observe.overview import read_overview
from tests.conftest import QUICK_ENV
from tests.inhandkit import ReportingWorker, hands, reporting
from tests.procs import ROOT, Proc, project_env
from tests.queuekit import start_workers
from tests.subscriberkit import start_subscriber, wait_subscribed

Status = subprocess.CompletedProcess[str]
DEAD_LINE = re.compile(
    r"^queue 'default': no live worker \(last heartbeat (\d+\.\d) s ago, TTL 3 s\)$", re.M
)
SILENT_LINE = re.compile(r"^subscriber 's1': silent for (\d+\.\d) s \(deadline 2\.0 s\): ", re.M)


def run_status(url: str, *args: str, **env: str) -> Status:
    """``python -m consumers status ARGS`` with the quick settings; its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "consumers", "status", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=project_env(url, **{**QUICK_ENV, **env}),
    )


def wait_status(url: str, code: int, timeout_s: float, *args: str) -> Status:
    """Run status until it exits ``code``; fail with the last answer after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = run_status(url, *args)
        if result.returncode == code:
            return result
        if time.monotonic() > deadline:
            pytest.fail(
                f"status never exited {code} within {timeout_s}s; last {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        time.sleep(0.1)


def rows_of(text: str, title: str) -> list[dict[str, str]]:
    """The rows of one table of the text view, by column name (cells are 2+ spaces apart)."""
    block = text.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0]
    heads, *rows = (re.split(r" {2,}", line.strip()) for line in block.splitlines())
    return [dict(zip(heads, row, strict=True)) for row in rows]


def start_bus(spawn: Callable[..., Proc], r: redis.Redis, url: str) -> tuple[Proc, Proc]:
    """A worker ``w1`` blocked in its pop and a subscriber ``s1`` listening on ``default``."""
    worker = start_workers(spawn, r, url, "w1")["w1"]
    subscriber = start_subscriber(spawn, url, "s1")
    wait_subscribed(r)
    return worker, subscriber


def test_help_states_the_exit_codes_and_usage_errors_exit_2() -> None:
    """--help documents every exit status; a bad --watch is a usage error (2)."""
    help_ = run_status("redis://127.0.0.1:1/0", "--help")
    assert help_.returncode == 0
    for text in ("--json", "--watch", "0  healthy", "1  unhealthy", "2  usage", "69 Redis"):
        assert text in help_.stdout
    for bad in (("--watch", "0"), ("--watch", "soon"), ("--bogus",)):
        result = run_status("redis://127.0.0.1:1/0", *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "usage:" in result.stderr


def test_tables_align_columns_and_cut_long_cells() -> None:
    """Text columns are left-aligned, ``>`` columns right-aligned, long cells cut to 20."""
    assert table("T", ["name", ">count"], [["a" * 40, "7"], ["b", "12345"]]).splitlines() == [
        "T",
        "  name                  count",
        "  aaaaaaaaaaaaaaaaa...      7",
        "  b                     12345",
    ]


def test_an_empty_bus_renders_and_its_queue_has_no_worker(
    r: redis.Redis, settings: Settings
) -> None:
    """The pure functions on a real overview: empty tables say so; the queue is a problem."""
    client = make_client(settings, "admin", "status")
    try:
        overview = read_overview(client, settings)
    finally:
        client.close()
    text = render(overview, "redis://somewhere")
    assert "WORKERS\n  (none)" in text and "SUBSCRIBERS\n  (none)" in text
    assert problems(overview, settings) == [
        "queue 'default': no live worker (no heartbeat, TTL 3 s)"
    ]


@pytest.mark.slow
def test_a_configured_queue_without_a_worker_exits_1(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """BUS_QUEUES names two queues, a live worker serves one: exit 1, one line for the other,
    whose waiting messages it counts."""
    start_workers(spawn, r, redis_server.url, "w1")
    r.lpush(keys.pending("orders"), b"{}", b"{}")
    result = run_status(redis_server.url, BUS_QUEUES="default,orders")
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "queue 'orders': no live worker (no heartbeat, TTL 3 s; 2 messages waiting)"
    ]
    alive = {q["queue"]: q["workers alive"] for q in rows_of(result.stdout, "QUEUES")}
    assert alive == {"default": "1", "orders": "0"}


def test_redis_unreachable_exits_69_in_one_line() -> None:
    """Nothing listens on the port: exit 69 with one line naming the URL, no traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_status(url)
    assert result.returncode == 69
    assert result.stdout == ""
    assert result.stderr.startswith(f"python -m consumers status: cannot reach Redis at {url}: ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_refused_login_exits_69_without_the_password(tmp_path: Path) -> None:
    """Redis answers, but refuses the password: exit 69, and the password is not printed."""
    acl = ("--user", "alice", "on", ">right", "~*", "+@all")
    server = RedisServer(tmp_path / "redis", *acl).start()
    try:
        url = f"redis://alice:wrong-secret@127.0.0.1:{server.port}/0"
        result = run_status(url)
    finally:
        server.kill()
    assert result.returncode == 69, result.stderr
    assert "refused the login" in result.stderr and "wrong-secret" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.slow
def test_a_healthy_bus_exits_0_and_shows_its_consumers(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, settings: Settings
) -> None:
    """A live worker and a listening subscriber: exit 0, nothing on stderr, both in the tables
    with what they handled; --json is the overview; every line fits in 120 columns."""
    start_bus(spawn, r, redis_server.url)
    producer = Producer(make_client(settings, "producer"))
    producer.push_many(range(3))
    producer.publish_many(range(2))

    def counted() -> bool:
        data = json.loads(run_status(redis_server.url, "--json").stdout)
        return [w["handled"] for w in data["workers"]] == [3] and [
            s["received"] for s in data["subscribers"]
        ] == [2]

    wait_for(counted, 15, "3 handled and 2 received in status --json", every_s=0.1)
    result = wait_status(redis_server.url, 0, 10)
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120
    [worker] = rows_of(result.stdout, "WORKERS")
    assert worker["name"] == "w1" and worker["delivery"] == "at-least-once"
    assert worker["state"] == "alive" and worker["handled"] == "3"
    assert worker["heartbeat/TTL"].endswith(" / 3 s")
    [subscriber] = rows_of(result.stdout, "SUBSCRIBERS")
    assert subscriber["name"] == "s1" and subscriber["channels"] == "default"
    assert subscriber["state"] == "listening" and subscriber["received"] == "2"
    assert rows_of(result.stdout, "QUEUES")[0]["workers alive"] == "1"
    for title in ("QUEUES", "WORKERS", "SUBSCRIBERS", "CHANNELS", "PRODUCERS", "LATENCY"):
        assert title in lines
    latency = {row["mode"]: row["messages"] for row in rows_of(result.stdout, "LATENCY")}
    assert latency == {"prodcons": "3", "pubsub": "2"}


@pytest.mark.slow
def test_a_killed_worker_is_dead_after_its_heartbeat_ttl(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """kill -9 leaves a heartbeat behind; once it is older than the TTL (3 s) the worker is
    dead and its queue has no live worker: exit 1, saying how old the last heartbeat is."""
    worker, _ = start_bus(spawn, r, redis_server.url)
    wait_status(redis_server.url, 0, 10)
    worker.signal(signal.SIGKILL)
    killed = time.monotonic()
    result = wait_status(redis_server.url, 1, 10)
    assert time.monotonic() - killed < 3.0 + 5.0
    found = DEAD_LINE.search(result.stderr)
    assert found and float(found[1]) > 3.0, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert [w["state"] for w in rows_of(result.stdout, "WORKERS")] == ["dead"]


@pytest.mark.slow
def test_a_frozen_subscriber_is_overdue_then_recovers(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """SIGSTOP: the subscriber's stats stop coming; past its 2 s deadline it is silent and
    overdue (exit 1, one line). SIGCONT: it reports again and the bus is healthy (exit 0)."""
    _, subscriber = start_bus(spawn, r, redis_server.url)
    wait_status(redis_server.url, 0, 10)
    subscriber.signal(signal.SIGSTOP)
    try:
        result = wait_status(redis_server.url, 1, 15)
        found = SILENT_LINE.search(result.stderr)
        assert found and float(found[1]) > 2.0, result.stderr
        assert "stats stopped coming" in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    finally:
        subscriber.signal(signal.SIGCONT)
    result = wait_status(redis_server.url, 0, 15)
    assert result.stderr == ""
    assert [s["state"] for s in rows_of(result.stdout, "SUBSCRIBERS")] == ["listening"]


@pytest.mark.slow
def test_watch_redraws_until_ctrl_c_and_exits_with_the_last_status(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """--watch prints a view every interval; Ctrl-C ends it with the last view's status (1:
    no worker here), without a traceback."""
    out = tmp_path / "watch.out"
    proc = Proc(
        [sys.executable, "-m", "consumers", "status", "--watch", "0.2"],
        project_env(redis_server.url, **QUICK_ENV),
        out,
    )
    try:
        wait_for(lambda: proc.log().count("QUEUES") >= 3, 15, "three views")
        proc.signal(signal.SIGINT)
        assert proc.wait(10) == 1
    finally:
        proc.stop()
    assert "Traceback" not in proc.log()
    assert "queue 'default': no live worker" in proc.log()


def test_a_stuck_worker_is_flagged_and_exits_1(redis_server: RedisServer, r: redis.Redis) -> None:
    """A live worker 3/8 busy within its limit is healthy and shows "3/8" and its oldest
    against its limit; one whose oldest message is past its limit, or that abandoned a
    handler, is OVERDUE: exit 1 with one stderr line each saying why. --json carries it."""
    url = redis_server.url
    within = hands(8, 3, oldest_age_ms=12_300, limit_ms=30_000)
    with reporting(r, "default", "w1", **within):
        result = run_status(url)
        assert result.returncode == 0, result.stderr
        [row] = rows_of(result.stdout, "HANDLERS (live workers)")
        assert row["name"] == "w1" and row["busy"] == "3/8" and row["overdue"] == "no"
        assert re.fullmatch(r"1[2-6]\.\d / 30 s", row["oldest/limit"]), row
        with (
            reporting(r, "default", "late", **hands(8, 1, oldest_age_ms=45_000, limit_ms=30_000)),
            reporting(r, "default", "gave-up", **hands(4, abandoned=2)),
        ):
            result = run_status(url)
            data = json.loads(run_status(url, "--json").stdout)
    assert result.returncode == 1
    gave_up, late = sorted(result.stderr.splitlines())
    assert re.fullmatch(r"worker 'late' on queue 'default': stuck: oldest message in hand for "
                        r"4[5-9]\.\d s \(limit 30\.0 s\)", late), late  # fmt: skip
    assert gave_up == ("worker 'gave-up' on queue 'default': stuck: 2 handlers given up on at "
                       "the time limit still run")  # fmt: skip
    rows = {w["name"]: w for w in rows_of(result.stdout, "HANDLERS (live workers)")}
    assert [rows[n]["overdue"] for n in ("w1", "late", "gave-up")] == ["no", "OVERDUE", "OVERDUE"]
    assert (rows["gave-up"]["busy"], rows["gave-up"]["oldest/limit"]) == ("0/4", "-")
    assert rows["gave-up"]["abandoned"] == "2"
    assert {w["name"]: w["overdue"] for w in data["workers"]} == {
        "gave-up": True, "late": True, "w1": False}  # fmt: skip
    assert max(len(line) for line in result.stdout.splitlines()) <= 120


def test_workers_without_in_hand_fields_show_no_handlers_table(
    r: redis.Redis, settings: Settings
) -> None:
    """A bus of workers that do not write them (older ones): no new table, no new problem."""
    worker = ReportingWorker(r, "default", "old")
    worker.tick()
    client = make_client(settings, "admin", "status")
    try:
        overview = read_overview(client, settings)
    finally:
        client.close()
    text = render(overview)
    assert "HANDLERS" not in text and "old" in text
    assert problems(overview, settings) == []
    worker.leave()
