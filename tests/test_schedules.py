"""Periodic schedules (BUS_SCHEDULE_FILE): the file and its checks, the ticks of a cron and of
an interval, one message per tick whatever number of workers fire it (one of them killed -9
among the ticks), what BUS_SCHEDULE_MISSED does with the ticks that passed while no worker ran,
and the next ticks in /api/stats and ``consumers status``."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.scheduler import Scheduler, on_time_ms
from consumers.schedules import Schedule, load
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Settings, SettingsError, decode, keys
from producer.observe.overview import read_overview
from producer.store.counts import read_balance
from tests.procs import ROOT, Proc, project_env, read_records, run_cli
from tests.queuekit import RECORD

Q = "default"
GOOD = """
[report]
queue = "default"
cron = "*/5 * * * *"
tz = "Europe/Paris"
payload = {kind = "report", pages = [1, 2, 3]}
priority = 5
timeout_s = 120
track = true

[tick]
queue = "default"
every_s = 1
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    return str(path)


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def test_a_schedule_file_is_read_with_every_option(settings: Settings, tmp_path: Path) -> None:
    report, tick = load(settings.replace(schedule_file=write(tmp_path, GOOD)))
    assert report == Schedule(name="report", queue=Q, cron="*/5 * * * *", tz="Europe/Paris",
                              payload={"kind": "report", "pages": [1, 2, 3]}, priority=5,
                              timeout_s=120.0, track=True)  # fmt: skip
    assert tick == Schedule(name="tick", queue=Q, every_ms=1000)
    assert report.spec == "cron */5 * * * * (Europe/Paris)" and tick.spec == "every 1 s"
    assert load(settings) == []  # no file: no schedules


BAD = [
    ("[r]\nqueue = 'nope'\nevery_s = 5", "schedule 'r': queue 'nope' is not one of BUS_QUEUES"),
    ("[r]\nqueue = 'default'\ncron = '61 * * * *'", "schedule 'r': bad cron expression"),
    ("[r]\nqueue = 'default'\ncron = '* * *'", "schedule 'r': bad cron expression"),
    ("[r]\nqueue = 'default'", "schedule 'r': give either cron or every_s"),
    ("[r]\nqueue = 'default'\ncron = '* * * * *'\nevery_s = 5", "give either cron or every_s"),
    ("[r]\nqueue = 'default'\nevery_s = 0.5", "schedule 'r': every_s must be a number"),
    ("[r]\nqueue = 'default'\nevery_s = true", "schedule 'r': every_s must be a number"),
    ("[r]\nqueue = 'default'\ncron = '* * * * *'\ntz = 'Mars/Olympus'", "unknown time zone"),
    ("[r]\nqueue = 'default'\nevery_s = 5\ntz = 'UTC'", "tz goes with cron only"),
    ("[r]\nqueue = 'default'\nevery_s = 5\nprio = 1", "schedule 'r': unknown keys ['prio']"),
    ("[r]\nqueue = 'default'\nevery_s = 5\npriority = 10", "priority must be an integer"),
    ("[r]\nqueue = 'default'\nevery_s = 5\ntimeout_s = 0", "timeout_s must be a number"),
    ("[r]\nqueue = 'default'\nevery_s = 5\ntrack = 'yes'", "track must be true or false"),
    ("[r]\nqueue = 'default'\nevery_s = 5\npayload = 1979-05-27", "cannot travel as JSON"),
    ("[r b]\nqueue = 'default'", "not TOML"),
    ("r = 1", "schedule 'r': not a table"),
    ('["a b"]\nqueue = "default"\nevery_s = 5', "schedule 'a b': a schedule's name has"),
]


@pytest.mark.parametrize(("text", "why"), BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_schedule_is_a_configuration_error_naming_it(
    settings: Settings, tmp_path: Path, text: str, why: str
) -> None:
    with pytest.raises(SettingsError, match="^BUS_SCHEDULE_FILE: .*" + why.replace("[", r"\[")):
        load(settings.replace(schedule_file=write(tmp_path, text)))


def test_the_worker_exits_78_naming_the_schedule_and_never_starts(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    bad = write(tmp_path, "[nightly]\nqueue = 'default'\ncron = '0 25 * * *'")
    cases = [({"BUS_SCHEDULE_FILE": bad}, "schedule 'nightly': bad cron expression"),
             ({"BUS_SCHEDULE_FILE": str(tmp_path / "none.toml")}, "cannot read"),
             ({"BUS_SCHEDULE_MISSED": "some"}, "BUS_SCHEDULE_MISSED must be one of")]  # fmt: skip
    for env, why in cases:
        done = run_cli("worker", "--handler", RECORD, env=project_env(redis_server.url, **env))
        assert done.returncode == 78, done.stderr
        assert why in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not [c for c in r.client_list() if c.get("name", "").startswith("bus:worker:")]


def test_the_ticks_of_an_interval_and_of_a_cron() -> None:
    every = Schedule(name="e", queue=Q, every_ms=30_000)
    assert every.latest(ms("2026-12-07T10:00:29.999+00:00")) == ms("2026-12-07T10:00:00+00:00")
    assert every.latest(ms("2026-12-07T10:00:30+00:00")) == ms("2026-12-07T10:00:30+00:00")
    assert every.after(ms("2026-12-07T10:00:30+00:00")) == ms("2026-12-07T10:01:00+00:00")
    start = ms("2026-12-07T10:00:00+00:00")
    assert every.ticks(start, start + 100_000, 10) == [start + 30_000, start + 60_000,
                                                       start + 90_000]  # fmt: skip
    assert every.ticks(start, start + 100_000, 2) == [start + 60_000, start + 90_000]
    cron = Schedule(name="c", queue=Q, cron="0 9 * * 1-5", tz="Europe/Paris")  # 9:00 weekdays
    friday = ms("2026-12-11T12:00:00+01:00")
    assert cron.latest(friday) == ms("2026-12-11T09:00:00+01:00")
    assert cron.after(friday) == ms("2026-12-14T09:00:00+01:00")  # Monday
    assert cron.latest(ms("2026-12-11T09:00:00+01:00")) == ms("2026-12-11T09:00:00+01:00")
    assert cron.ticks(ms("2026-12-09T09:00:00+01:00"), friday, 10) == [
        ms("2026-12-10T09:00:00+01:00"), ms("2026-12-11T09:00:00+01:00")]  # fmt: skip


def every_second(settings: Settings, missed: str = "latest") -> Scheduler:
    s = settings.replace(schedule_missed=missed)
    tick = Schedule(name="tick", queue=Q, every_ms=1000, payload={"n": 1})
    return Scheduler(redis.Redis.from_url(settings.redis_url), Q, [tick], s)


def sent(r: redis.Redis) -> list[str]:
    return [decode(x).id for x in reversed(r.lrange(keys.pending(Q), 0, -1))]


def redis_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


@pytest.mark.parametrize("missed", ["latest", "all", "none"])
def test_the_ticks_missed_while_no_worker_ran(
    missed: str, settings: Settings, r: redis.Redis
) -> None:
    """A new schedule starts at its next tick. The every-second schedule's last tick was 10.5 s
    ago: ``latest`` sends one message (the latest tick), ``all`` one for each of the 10 or 11
    missed ticks, oldest first, ``none`` only a tick that is still on time."""
    scheduler = every_second(settings, missed)
    assert scheduler.fire() == 0 and sent(r) == []  # new: from its next tick on
    now = redis_ms(r)
    last = now - now % 1000 - 10_000
    r.hset(keys.schedules(Q), "tick", last - 500)  # 10.5 s before the latest tick
    n = scheduler.fire()
    latest = redis_ms(r)
    latest -= latest % 1000
    ids = sent(r)
    if missed == "latest":
        assert ids == [f"tick-{latest}"] or ids == [f"tick-{latest - 1000}"]
    elif missed == "all":
        ticks = [int(i.split("-")[1]) for i in ids]
        assert ticks[0] == last and ticks == list(range(last, ticks[-1] + 1, 1000))
        assert len(ticks) in (11, 12)
    else:
        late = redis_ms(r) - latest > on_time_ms(settings)  # (never with every_s = 1)
        assert ids == ([] if late else [f"tick-{latest}"]) or ids == [f"tick-{latest - 1000}"]
    assert n == len(ids) and scheduler.fire() == 0  # each tick once
    assert int(r.hget(keys.schedules(Q), "tick")) >= latest - 1000


def test_two_schedulers_fire_each_tick_once(settings: Settings, r: redis.Redis) -> None:
    """Ten schedulers of one queue, each firing 20 times a second for 3 s (as ten workers'
    movers would, with their passes out of step): one message per tick, none skipped."""
    schedulers = [every_second(settings) for _ in range(10)]
    schedulers[0].fire()
    deadline = time.monotonic() + 3.2
    while time.monotonic() < deadline:
        for s in schedulers:
            s.fire()
        time.sleep(0.005)
    ticks = [int(i.split("-")[1]) for i in sent(r)]
    assert len(ticks) >= 2 and ticks == list(range(ticks[0], ticks[-1] + 1000, 1000)), ticks
    assert sum(s.sent for s in schedulers) == len(ticks)
    assert read_balance(r, Q)["pushed"] == len(ticks)


@pytest.mark.slow
def test_workers_fire_one_message_per_tick_one_killed_at_a_tick(
    redis_server: RedisServer, r: redis.Redis, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """Three worker processes read one file (an every-second schedule, priority 7, tracked):
    each tick is sent exactly once for 6 s though one of the workers is killed -9 in the middle
    (what it held is delivered again, at-least-once: attempt 2), and /api/stats and
    ``consumers status`` show the next tick."""
    env = {"BUS_SCHEDULE_FILE": write(tmp_path, "[tick]\nqueue = 'default'\nevery_s = 1\n"
                                                "priority = 7\ntrack = true\npayload = 'beat'"),
           "BUS_MOVER_INTERVAL_S": "0.1"}  # fmt: skip
    workers = [spawn("worker", redis_server.url, "--name", f"w{i}", "--handler", RECORD, **env)
               for i in range(3)]  # fmt: skip
    path = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(path)) >= 3, 10, "three ticks handled")
    workers[0].signal(signal.SIGKILL)
    wait_for(lambda: len({x["id"] for x in read_records(path)}) >= 7, 10, "four more ticks")
    for w in workers[1:]:
        assert w.stop() == 0, w.log()
    records = read_records(path)
    firsts = sorted(int(x["id"].split("-")[1]) for x in records if x["attempt"] == 1)
    assert firsts == list(range(firsts[0], firsts[-1] + 1000, 1000)), firsts  # once each, no gap
    again = [x for x in records if x["attempt"] > 1]  # what the killed worker held
    assert len(again) <= 2 and {x["id"] for x in again} <= {x["id"] for x in records
                                                           if x["attempt"] == 1}, again  # fmt: skip
    # Every tick sent, by id: handled, or still in a list (the killed worker's, or pending).
    held = [decode(x).id for k in r.scan_iter(match=keys.processing_prefix(Q) + "*")
            for x in r.lrange(k, 0, -1)] + sent(r)  # fmt: skip
    ids = {x["id"] for x in records} | set(held)
    ticks = sorted(int(i.split("-")[1]) for i in ids)
    assert ticks == list(range(ticks[0], ticks[-1] + 1000, 1000)), ticks
    assert read_balance(r, Q)["pushed"] == len(ticks)  # each sent once
    assert {x["priority"] for x in records} == {7} and {x["payload"] for x in records} == {"beat"}
    record = r.hgetall(keys.record(Q, records[0]["id"]))
    assert record[b"state"] == b"handled"
    overview: dict[str, Any] = read_overview(r, Settings(redis_url=redis_server.url))
    tick = overview["queues"][Q]["schedules"]["tick"]
    assert tick["spec"] == "every 1 s" and tick["next_ms"] > tick["last_tick_ms"] >= ticks[-1]
    out = run_cli("status", env=project_env(redis_server.url)).stdout
    assert "SCHEDULES" in out and "every 1 s" in out, out


def test_the_example_file_is_the_one_the_page_shows_and_it_loads(settings: Settings) -> None:
    example = ROOT / "deploy" / "schedules.example.toml"
    page = (ROOT / "docs" / "schedules.md").read_text()
    block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    assert block in example.read_text()
    report, heartbeat = load(settings.replace(schedule_file=str(example)))
    assert (report.cron, report.tz, report.track) == ("*/5 * * * *", "Europe/Paris", True)
    assert (heartbeat.every_ms, heartbeat.priority) == (60_000, 1)
