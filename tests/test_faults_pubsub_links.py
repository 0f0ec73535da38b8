"""Pub/sub when the subscriber's link breaks: CLIENT KILL, a Redis restart, a black hole.

Each test runs its own redis-server (``fresh_redis``) and a subscriber process that records
every message it receives (:mod:`tests.subscriberkit`), publishes every 5 ms with one Producer
(:mod:`tests.publisher`) and injects the fault mid-stream. Then the subscriber's own count of
what it lost must equal the truth, exactly, and it must receive everything again after the
fault. Measured detection and resume times are printed (``pytest -s``) for the release note.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from tests.procs import Proc
from tests.publisher import Publisher, account, receives_after
from tests.subscriberkit import (
    counter,
    log_events,
    redis_log_times,
    report,
    start_subscriber,
    stop_and_read,
    wait_received,
    wait_reconnected,
    wait_records,
    wait_subscribed,
)

pytestmark = pytest.mark.slow


def test_client_kill_pubsub_mid_stream(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """CLIENT KILL TYPE pubsub while publishing every 5 ms: one reconnect, lost exact."""
    r = fresh_redis.client()
    sub = start_subscriber(spawn, fresh_redis.url)
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url).start()
    try:
        wait_records(records_path, 100)
        t_kill = time.time()
        assert r.client_kill_filter(_type="pubsub") == 1
        cut = wait_reconnected(sub, t_kill)
        wait_records(records_path, 100, after=cut.t_back)
    finally:
        pub.stop()
    records, stats = stop_and_read(sub, r, records_path, pub.last_ok())

    assert pub.count("failed") == pub.count("unknown") == 0  # only the subscriber was cut
    acc = account(pub, records, stats)
    assert counter(stats, "reconnects") == 1
    first_post = receives_after(pub, records, cut.t_lost + 0.001)
    report("CLIENT KILL TYPE pubsub", detection=cut.t_lost - t_kill,
           resubscribed=cut.t_back - t_kill, resume=first_post["wall"] - t_kill,
           published=acc.published, received=acc.received, lost=counter(stats, "lost"),
           reconnects=counter(stats, "reconnects"))  # fmt: skip
    print(f"  {cut.lost_line}")


def test_redis_restart_mid_stream(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Redis restarts (SIGTERM, start on the same port) while publishing: publishes that raised
    while it was down are not published; lost is exact; the subscriber reconnects."""
    r = fresh_redis.client()
    sub = start_subscriber(spawn, fresh_redis.url)
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url).start()
    try:
        wait_records(records_path, 100)
        t_stop = time.time()
        fresh_redis.restart()
        t_ready = time.time()
        cut = wait_reconnected(sub, t_stop)
        wait_records(records_path, 100, after=cut.t_back)
    finally:
        pub.stop()
    r = fresh_redis.client()
    records, stats = stop_and_read(sub, r, records_path, pub.last_ok())

    acc = account(pub, records, stats)
    assert counter(stats, "reconnects") >= 1
    first_post = receives_after(pub, records, cut.t_lost + 0.001)
    # From redis-server's log: when the old one began its shutdown, when the new one listened.
    downs = redis_log_times(fresh_redis, "User requested shutdown")
    t_down = next(t for t in downs if t >= t_stop - 0.001)
    ups = redis_log_times(fresh_redis, "Ready to accept connections")
    t_up = next(t for t in ups if t >= t_down)
    assert t_up <= t_ready + 0.001
    report("Redis restart", outage=t_up - t_down, detection=cut.t_lost - t_down,
           resubscribed_after_up=cut.t_back - t_up, resume_after_up=first_post["wall"] - t_up,
           published=acc.published, refused=pub.count("failed"), unknown=acc.unknown,
           received=acc.received, lost=counter(stats, "lost"),
           reconnects=counter(stats, "reconnects"))  # fmt: skip
    print(f"  {cut.lost_line}")


def test_black_hole_sigstop_is_detected_by_the_pong_deadline(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """redis-server SIGSTOPped for 4 s (longer than the PONG deadline): the subscriber's PING
    goes unanswered, it drops the link within interval + deadline + 1 s, keeps trying, and
    receives again after SIGCONT. Nothing is published while Redis is paused."""
    interval_s, deadline_s, pause_s = 1.0, 1.0, 4.0
    r = fresh_redis.client()
    sub = start_subscriber(spawn, fresh_redis.url, BUS_HEALTH_CHECK_INTERVAL_S=f"{interval_s:g}",
                           BUS_PONG_DEADLINE_S=f"{deadline_s:g}")  # fmt: skip
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url).start()
    try:
        wait_records(records_path, 100)
    finally:
        pub.stop()  # no PUBLISH in flight from here: none can hang on the paused server
    wait_received(records_path, pub.last_ok())
    t_pause = time.time()
    fresh_redis.pause()
    try:
        time.sleep(pause_s)
    finally:
        fresh_redis.resume()
    t_cont = time.time()
    pub.start()
    try:
        cut = wait_reconnected(sub, t_pause)
        wait_records(records_path, 100, after=cut.t_back)
    finally:
        pub.stop()
    records, stats = stop_and_read(sub, r, records_path, pub.last_ok())

    assert pub.count("failed") == pub.count("unknown") == 0
    acc = account(pub, records, stats)
    assert "DeadLink" in cut.lost_line and "no PONG" in cut.lost_line, cut.lost_line
    detection = cut.t_lost - t_pause
    assert detection <= interval_s + deadline_s + 1.0, f"detected after {detection:.3f}s"
    assert cut.t_lost < t_cont, "the dead link was only noticed after Redis came back"
    assert counter(stats, "deadline_misses") >= 1
    assert counter(stats, "pings") >= 1
    assert counter(stats, "reconnects") >= 1
    first_post = receives_after(pub, records, t_cont)
    report("black hole (SIGSTOP 4 s)", detection=detection,
           resubscribed_after_sigcont=cut.t_back - t_cont,
           resume_after_sigcont=first_post["wall"] - t_cont, published=acc.published,
           received=acc.received, lost=counter(stats, "lost"),
           deadline_misses=counter(stats, "deadline_misses"),
           reconnects=counter(stats, "reconnects"),
           failed_attempts_while_paused=len(log_events(sub, "Redis connection lost")))  # fmt: skip
    print(f"  {cut.lost_line}")
