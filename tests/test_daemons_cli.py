"""Both daemons as real processes: --help, configuration errors, SIGTERM in time, second signal."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, keys, make_client
from tests.procs import ROOT, Proc, read_records, run_cli

pytestmark = pytest.mark.slow


def test_help_explains_each_command() -> None:
    """--help of the program and of each command exits 0 and names the options."""
    top = run_cli("--help")
    assert top.returncode == 0 and "worker" in top.stdout and "subscriber" in top.stdout
    worker = run_cli("worker", "--help")
    assert worker.returncode == 0
    for word in ("--queue", "--delivery", "--handler", "--name", "at-most-once", "BUS_"):
        assert word in worker.stdout
    sub = run_cli("subscriber", "--help")
    assert sub.returncode == 0 and "--channel" in sub.stdout and "--pattern" in sub.stdout


def test_configuration_errors_exit_78_with_a_message() -> None:
    """A bad BUS_* value or --handler is reported in one line, exit status 78."""
    env = {**os.environ, "BUS_BLOCK_TIMEOUT_S": "nope", "PYTHONPATH": str(ROOT)}
    bad_env = run_cli("worker", env=env)
    assert bad_env.returncode == 78 and "BUS_BLOCK_TIMEOUT_S" in bad_env.stderr
    bad_handler = run_cli("worker", "--handler", "no.such.module:fn")
    assert bad_handler.returncode == 78 and "no.such.module" in bad_handler.stderr
    sharded = {**os.environ, "BUS_PUBSUB_MODE": "sharded", "PYTHONPATH": str(ROOT)}
    no_patterns = run_cli("subscriber", "--pattern", "orders.*", env=sharded)
    assert no_patterns.returncode == 78 and "patterns need classic pub/sub" in no_patterns.stderr
    assert "Traceback" not in bad_env.stderr + bad_handler.stderr + no_patterns.stderr


def idle_stop_time(proc: Proc) -> float:
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.log()
    return time.monotonic() - started


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_worker_sigterm_exits_0_within_block_timeout(
    delivery: str, spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """Idle and blocked in a 5 s pop, the worker exits 0 within block timeout + 1 s."""
    proc = spawn(
        "worker",
        redis_server.url,
        "--name",
        "w",
        "--delivery",
        delivery,
        BUS_BLOCK_TIMEOUT_S="5",
        BUS_WORKER_READ_TIMEOUT_S="7",
    )
    wait_for(lambda: r.zscore(keys.consumers("default"), "w"), 10, "worker heartbeat")
    time.sleep(0.5)
    assert idle_stop_time(proc) < 6.0
    assert r.zscore(keys.consumers("default"), "w") is None


def test_worker_sigterm_finishes_the_message_in_hand(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path
) -> None:
    """SIGTERM during a 2 s handler: the handler completes, the message is acked, exit 0,
    and the rest of the queue stays queued (nothing acknowledged is lost, nothing popped)."""
    settings = Settings(redis_url=redis_server.url)
    producer = Producer(make_client(settings, "producer"))
    first = producer.push({"sleep_s": 2}).envelope
    producer.push_many([{"sleep_s": 0}] * 5)
    proc = spawn("worker", redis_server.url, "--name", "w", "--concurrency", "1",
                 "--handler", "tests.handlers_for_tests:slow")  # fmt: skip
    records = tmp_path / "records.jsonl"
    wait_for(lambda: read_records(records), 10, "handler started")
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.log()
    events = [(x["event"], x["id"]) for x in read_records(records)]
    assert events == [("start", first.id), ("handled", first.id)]
    assert r.llen(keys.pending("default")) == 5
    assert r.llen(keys.processing("default", "w")) == 0


def test_second_signal_exits_at_once(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path
) -> None:
    """A second SIGTERM while a long handler runs exits 130 immediately; the unfinished message
    stays in the processing list for recovery (at-least-once)."""
    settings = Settings(redis_url=redis_server.url)
    Producer(make_client(settings, "producer")).push({"sleep_s": 30})
    proc = spawn(
        "worker", redis_server.url, "--name", "w", "--handler", "tests.handlers_for_tests:slow"
    )
    wait_for(lambda: read_records(tmp_path / "records.jsonl"), 10, "handler started")
    proc.signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(5) == 130
    assert time.monotonic() - started < 2
    assert r.llen(keys.processing("default", "w")) == 1


def test_subscriber_sigterm_exits_0_quickly(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis
) -> None:
    """The subscriber leaves its channel and exits 0 within a second of SIGTERM."""
    proc = spawn("subscriber", redis_server.url, "--name", "s")
    wait_for(lambda: r.pubsub_numsub(keys.channel("default"))[0][1] == 1, 10, "subscribed")
    assert idle_stop_time(proc) < 2.0
    assert r.pubsub_numsub(keys.channel("default"))[0][1] == 0


def test_sigterm_releases_the_pop_after_a_silent_reconnect(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path
) -> None:
    """Redis closes the worker's connection while a handler runs; redis-py replaces it silently
    from the pool. SIGTERM must still release the new connection's blocked pop at once."""
    settings = Settings(redis_url=redis_server.url)
    Producer(make_client(settings, "producer")).push({"sleep_s": 1})
    proc = spawn(
        "worker",
        redis_server.url,
        "--name",
        "w",
        "--handler",
        "tests.handlers_for_tests:slow",
        BUS_BLOCK_TIMEOUT_S="10",
        BUS_WORKER_READ_TIMEOUT_S="12",
    )
    records = tmp_path / "records.jsonl"
    wait_for(lambda: read_records(records), 10, "handler started")
    (victim,) = [c for c in r.client_list(_type="normal") if c["name"] == "bus:worker:w"]
    r.client_kill_filter(_id=int(victim["id"]))
    wait_for(lambda: len(read_records(records)) == 2, 10, "handler finished")
    wait_for(
        lambda: any(
            c["name"] == "bus:worker:w" and c["cmd"] == "blmove"
            for c in r.client_list(_type="normal")
        ),
        10,
        "blocked again on a new connection",
    )
    assert idle_stop_time(proc) < 2.0
    assert r.llen(keys.processing("default", "w")) == 0
