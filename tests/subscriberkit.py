"""Subscribers under a pub/sub fault test: ``python -m consumers subscriber`` processes whose
handler (``tests.handlers_for_tests``) writes one JSON line per message, and what they leave to
read: those records, their final stats hash, their log (and redis-server's), the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from tests.procs import Proc, read_records
from tests.publisher import Attempt

HANDLER = "tests.handlers_for_tests:record"
SLOW_HANDLER = "tests.handlers_for_tests:slow_record"
CHANNEL = keys.channel("default")


def start_subscriber(
    spawn: Callable[..., Proc], url: str, name: str = "s1", handler: str = HANDLER, **env: str
) -> Proc:
    """Spawn subscriber ``name``; its records go to ``TEST_BUS_RECORD`` (the spawn default or
    ``env``'s)."""
    return spawn("subscriber", url, "--name", name, "--handler", handler, **env)


def wait_subscribed(r: redis.Redis, count: int = 1, timeout_s: float = 10.0) -> None:
    """Wait until ``count`` subscribers listen on the channel."""
    wait_for(lambda: r.pubsub_numsub(CHANNEL)[0][1] == count, timeout_s, f"{count} subscribers")


def wait_records(path: Path, count: int, after: float | None = None) -> None:
    """Wait (10 s at most) until ``count`` messages are recorded (handled after ``after``)."""
    if after is None:
        wait_for(lambda: len(read_records(path)) >= count, 10,
                 f"{count} messages received in {path.name}")  # fmt: skip
    else:
        wait_for(lambda: sum(1 for x in read_records(path) if x["wall"] > after) >= count,
                 10, f"{count} messages after the reconnect")  # fmt: skip


def wait_received(path: Path, attempt: Attempt, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Wait until the subscriber recorded ``attempt``; returns the records."""
    wait_for(lambda: any(x["id"] == attempt.id for x in read_records(path)), timeout_s,
             f"message n={attempt.n} recorded in {path.name}")  # fmt: skip
    return read_records(path)


def stop_cleanly(proc: Proc) -> None:
    """SIGTERM and exit 0: the daemon's last tick writes its final counters."""
    assert proc.stop() == 0, proc.log()


def stop_and_read(
    proc: Proc, r: redis.Redis, path: Path, last: Attempt, name: str = "s1", timeout_s: float = 10.0
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Wait until subscriber ``name`` recorded ``last``, stop it cleanly; its records and final
    stats."""
    records = wait_received(path, last, timeout_s)
    stop_cleanly(proc)
    return records, final_stats(r, name)


def final_stats(r: redis.Redis, name: str) -> dict[str, str]:
    """Subscriber ``name``'s stats hash."""
    raw: dict[bytes, bytes] = r.hgetall(keys.stats("subscriber", name))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def counter(stats: dict[str, str], name: str) -> int:
    return int(stats[name])


def log_time(line: str) -> float:
    """Wall-clock time of one log line (``%(asctime)s``: local time, milliseconds)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_events(proc: Proc, needle: str) -> list[tuple[float, str]]:
    """Every log line of ``proc`` containing ``needle``, with its time."""
    return [(log_time(line), line) for line in proc.log().splitlines() if needle in line]


def first_log(proc: Proc, needle: str, after: float = 0.0) -> tuple[float, str] | None:
    """The first log line containing ``needle`` stamped at or after ``after`` (ms precision)."""
    for t, line in log_events(proc, needle):
        if t >= after - 0.001:
            return t, line
    return None


def wait_log(proc: Proc, needle: str, after: float, timeout_s: float) -> tuple[float, str]:
    """Wait for :func:`first_log`."""
    return wait_for(lambda: first_log(proc, needle, after), timeout_s, f"log line {needle!r}")


@dataclass
class Reconnect:
    t_lost: float  # the "Redis connection lost" log line
    lost_line: str
    t_back: float  # the "reconnected after" log line


def wait_reconnected(
    proc: Proc, after: float, lost_within_s: float = 10.0, back_after_lost: bool = False
) -> Reconnect:
    """Wait for the subscriber's first "Redis connection lost" line at or after ``after``, then
    (10 s at most) its "reconnected after" line at or after ``after`` (or the lost line)."""
    t_lost, lost_line = wait_log(proc, "Redis connection lost", after, lost_within_s)
    t_back, _ = wait_log(proc, "reconnected after", t_lost if back_after_lost else after, 10)
    return Reconnect(t_lost, lost_line, t_back)


def redis_log_times(server: RedisServer, needle: str) -> list[float]:
    """Wall-clock times of redis-server's own log lines containing ``needle`` (ms precision),
    e.g. ``11564:M 23 Nov 2026 02:15:30.511 # User requested shutdown...``."""
    times = []
    for line in (server.workdir / "redis.log").read_text(errors="replace").splitlines():
        if needle in line and ":M " in line:
            stamp = line.split(":M ", 1)[1][:24]
            times.append(datetime.strptime(stamp, "%d %b %Y %H:%M:%S.%f").timestamp())
    return times


def report(fault: str, **numbers: object) -> None:
    """Print the ``[pubsub fault]`` line with the measured figures (seconds for floats)."""
    parts = " ".join(
        f"{k}={v:.3f}s" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
    )
    print(f"\n[pubsub fault] {fault}: {parts}")
