"""The daemons' liveness machinery: the periodic tick, the order of exit, a thread that dies."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from consumers.lists import QueueOps
from consumers.worker import Worker
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, keys, make_client
from producer.observe.stats import Flusher
from tests.inproc import running
from tests.procs import Proc, read_records
from web import create_app

SLOW = "tests.handlers_for_tests:slow"
RECORD = "tests.handlers_for_tests:record"


def test_no_tick_runs_after_stop_returns() -> None:
    """stop() waits for a tick in progress (a slow Redis can hold one for seconds): once it
    returns, nothing the tick writes can land after what the caller does next (the worker's
    exit withdraws its heartbeat, which a late tick would write back)."""
    in_tick, release, stopped = threading.Event(), threading.Event(), threading.Event()
    late: list[float] = []

    def tick() -> None:
        in_tick.set()
        release.wait(10)
        if stopped.is_set():
            late.append(time.monotonic())

    flusher = Flusher(0.01, tick)
    flusher.start()
    assert in_tick.wait(5)
    threading.Timer(2.5, release.set).start()  # longer than any fixed wait stop() might give up
    flusher.stop()
    stopped.set()
    release.set()
    flusher.join(5)
    assert not flusher.is_alive()
    assert late == [], "a tick finished after stop() had returned"


def test_a_tick_that_raises_does_not_end_the_thread() -> None:
    """Whatever a tick raises, the thread goes on ticking (the heartbeat must not stop)."""
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected: a bug in the periodic work")

    flusher = Flusher(0.01, tick)
    flusher.start()
    deadline = time.monotonic() + 5
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    flusher.stop()
    assert len(calls) >= 5, "the thread died with the exception"


@pytest.mark.slow
def test_a_consumer_thread_that_dies_ends_the_process_non_zero(
    settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A worker of two queues whose handler raises SystemExit on one of them: that thread is
    gone, so the process must not live on half deaf. It stops the other thread and exits 70
    (EX_SOFTWARE), saying why, so that a supervisor restarts it."""
    proc = spawn("worker", settings.redis_url, "--queue", "a", "--queue", "b",
                 "--handler", "tests.handlers_for_tests:exit_on_die",
                 BUS_QUEUES="a,b")  # fmt: skip
    r = redis.Redis.from_url(settings.redis_url)
    wait_for(lambda: r.zcard(keys.consumers("a")) and r.zcard(keys.consumers("b")), 10, "both")
    producer = Producer(make_client(settings, "producer"))
    producer.push("fine", "b")
    producer.push("die", "a")
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail("the process lived on with a dead consumer thread:\n" + proc.log()[-2000:])
    assert code == 70, proc.log()[-2000:]
    assert "queue a" in proc.log() and "SystemExit" in proc.log()
    handled = [x["payload"] for x in read_records(tmp_path / "records.jsonl")]
    assert sorted(handled) == ["die", "fine"]
    assert r.zcard(keys.consumers("b")) == 0  # the other thread left cleanly


@pytest.mark.slow
def test_a_worker_whose_clock_runs_60_s_behind_is_not_reaped(
    settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Heartbeats and the reaper's cutoff are on Redis's clock, not each host's: a live worker
    whose wall clock runs a minute behind (NTP not yet run, a VM resumed) keeps its message,
    and the other worker's reaper leaves it alone, well past the heartbeat TTL (3 s)."""
    r = redis.Redis.from_url(settings.redis_url)
    spawn("worker", settings.redis_url, "--name", "late", "--handler", SLOW,
          module="tests.skewed_clock", TEST_CLOCK_OFFSET_S="-60")  # fmt: skip
    wait_for(lambda: r.zscore(keys.consumers("default"), "late"), 10, "the late worker")
    Producer(make_client(settings, "producer")).push({"sleep_s": 6})
    wait_for(lambda: r.llen(keys.processing("default", "late")), 5, "the late worker's claim")
    spawn("worker", settings.redis_url, "--name", "on-time", "--handler", SLOW)
    wait_for(lambda: r.zscore(keys.consumers("default"), "on-time"), 10, "the on-time worker")
    records = tmp_path / "records.jsonl"
    wait_for(lambda: any(x["event"] == "handled" for x in read_records(records)), 15, "the end")
    time.sleep(1.0)  # a redelivery to the on-time worker would start now
    events = [(x["event"], x["pid"]) for x in read_records(records)]
    assert len(events) == 2 and events[0][1] == events[1][1], events  # one start, one end
    assert r.zscore(keys.consumers("default"), "late") is not None  # never unregistered


@pytest.mark.slow
def test_a_second_worker_with_the_same_name_is_refused(
    settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Two workers named alike would share one processing list and take each other's messages
    in flight. The second one waits for the name's lease (a crashed owner's lapses within the
    heartbeat TTL, 3 s here) and, the owner being alive, exits 75 saying so; the first goes on."""
    r = redis.Redis.from_url(settings.redis_url)
    first = spawn("worker", settings.redis_url, "--name", "same", "--handler", RECORD)
    wait_for(lambda: r.zscore(keys.consumers("default"), "same"), 10, "the first worker")
    second = spawn("worker", settings.redis_url, "--name", "same", "--handler", RECORD)
    try:
        code = second.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("the second worker of the same name runs:\n" + second.log()[-2000:])
    assert code == 75, second.log()[-2000:]
    assert "another worker named 'same'" in second.log()
    Producer(make_client(settings, "producer")).push("after")
    wait_for(lambda: read_records(tmp_path / "records.jsonl"), 5, "the first worker handling")
    assert [x["pid"] for x in read_records(tmp_path / "records.jsonl")] == [first.pid]


def test_a_name_held_by_another_is_never_reported_free(r: redis.Redis) -> None:
    """While another process holds a name's lease, taking it reports time left, even in the
    lease's last millisecond (PTTL 0) or for a lease without a TTL (PTTL -1): a 0 would read as
    taken, and the worker would then find the name not its own."""
    ops = QueueOps(r, "default")
    assert ops.take_name("w", "theirs", 3.0) == 0.0
    assert 0 < ops.take_name("w", "mine", 3.0) <= 3.0
    r.persist(keys.owner("default", "w"))  # no TTL: PTTL -1
    assert ops.take_name("w", "mine", 3.0) > 0
    r.pexpire(keys.owner("default", "w"), 30)  # then ask in a loop through its last ms
    deadline = time.monotonic() + 5
    while (left := ops.take_name("w", "mine", 3.0)) > 0 and time.monotonic() < deadline:
        pass
    assert left == 0 and r.get(keys.owner("default", "w")) == b"mine"  # taken once free


@pytest.mark.slow
def test_a_worker_restarted_under_its_name_takes_its_messages_back(
    settings: Settings, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """kill -9 with a message in hand, then the same name again at once: the new process waits
    for the dead one's lease to lapse, then recovers its list and handles the message (as
    attempt 2: the dead one's handler had started it)."""
    r = redis.Redis.from_url(settings.redis_url)
    old = spawn("worker", settings.redis_url, "--name", "w", "--handler", SLOW)
    wait_for(lambda: r.zscore(keys.consumers("default"), "w"), 10, "the worker")
    Producer(make_client(settings, "producer")).push({"sleep_s": 30})
    records = tmp_path / "records.jsonl"
    wait_for(lambda: read_records(records), 5, "the message in hand")
    old.signal(signal.SIGKILL)
    old.wait(5)
    spawn("worker", settings.redis_url, "--name", "w", "--handler", RECORD)
    wait_for(lambda: len(read_records(records)) >= 2, 10, "the message handled again")
    assert [(x["event"], x["attempt"]) for x in read_records(records)] == [
        ("start", 1), ("handled", 2)
    ]  # fmt: skip


def test_the_overview_judges_heartbeats_on_redis_clock(
    settings: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web host's clock runs a minute behind Redis's. A worker Redis heard from a moment
    ago is alive in /api/stats; one silent for a minute is not: ages are Redis's now minus
    Redis's stamps, never this host's now."""
    ops = QueueOps(r, "default")
    assert ops.heartbeat("w", "token", settings.heartbeat_ttl_s)
    seconds, micros = r.time()
    r.zadd(keys.consumers("default"), {"gone": seconds * 1000 + micros // 1000 - 60_000})
    app = create_app(settings)
    real_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() - 60 * 10**9)
    with app.test_client() as c:
        queue = c.get("/api/stats").get_json()["queues"]["default"]
    monkeypatch.undo()
    app.extensions["bus"].close()
    ages = {w["name"]: (w["alive"], w["heartbeat_age_ms"]) for w in queue["consumers"]}
    assert ages["w"][0] is True and 0 <= ages["w"][1] < 2000, ages
    assert ages["gone"][0] is False and ages["gone"][1] >= 60_000, ages


def test_the_heartbeat_goes_on_when_writing_stats_fails(
    settings: Settings, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Writing the stats raises (an injected bug, not a Redis error): the worker keeps
    beating, so nobody reaps it while it consumes, and the error is logged."""
    worker = Worker(settings, "default", "w1", lambda env: None)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: stats cannot be written")

    worker.stats.flush = broken  # type: ignore[method-assign]
    with running(worker):
        first = wait_for(lambda: r.zscore(keys.consumers("default"), "w1"), 5, "a heartbeat")
        time.sleep(settings.heartbeat_interval_s * 3)
        later = r.zscore(keys.consumers("default"), "w1")
    assert later is not None and later > first, "the heartbeat stopped"
    assert "injected: stats cannot be written" in caplog.text
