"""The daemons' liveness machinery: the periodic tick, the order of exit, a thread that dies."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from producer import Producer, Settings, keys, make_client
from producer.stats import Flusher
from tests.procs import Proc, read_records, wait_for


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
