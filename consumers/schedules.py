"""Periodic schedules, celerybeat's job: the file that declares them (``BUS_SCHEDULE_FILE``) and
their ticks.

The file is TOML, one table per schedule, named as the table::

    [report]
    queue = "default"            # one of BUS_QUEUES
    cron = "*/5 * * * *"         # minute hour day month weekday (a 6th, leading field: seconds)
    tz = "Europe/Paris"          # the cron's time zone (default UTC)
    payload = {kind = "report"}  # any TOML value but a date or time (default: null)
    priority = 5                 # optional, as Producer.push's
    timeout_s = 120              # optional
    track = true                 # optional

    [heartbeat]
    queue = "default"
    every_s = 30                 # instead of cron: every 30 s, at multiples of 30 s since the epoch

Each schedule's ticks are the same for every process that reads the file (a cron's from its
expression, an interval's from the epoch), so any number of workers can fire them: the script
that sends a tick (:mod:`consumers.scheduler`) sends each one once. A file that cannot be read,
an unknown key, a bad cron expression, time zone or interval, a queue not in ``BUS_QUEUES``:
:class:`~producer.SettingsError` naming ``BUS_SCHEDULE_FILE`` and the schedule (the daemon exits
78 before it starts).
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from producer import Settings, SettingsError
from producer.settings.checks import NAME_RE
from producer.store.envelope import check_priority, check_timeout

KEYS = ("queue", "cron", "tz", "every_s", "payload", "priority", "timeout_s", "track")
MAX_EVERY_S = 366 * 86400
UTC = dt.UTC


@dataclass(frozen=True)
class Schedule:
    """One schedule of the file: what it sends (``payload`` to ``queue`` with its options) and
    when (``cron`` in ``tz``, or every ``every_ms``)."""

    name: str
    queue: str
    payload: Any = None
    cron: str = ""
    tz: str = "UTC"
    every_ms: int = 0
    priority: int = 0
    timeout_s: float | None = None
    track: bool = False

    @property
    def spec(self) -> str:
        """When it fires, in words: ``cron */5 * * * * (UTC)`` or ``every 30 s``."""
        if self.cron:
            return f"cron {self.cron} ({self.tz})"
        return f"every {self.every_ms / 1000:g} s"

    def latest(self, now_ms: int) -> int | None:
        """Its latest tick at or before ``now_ms`` (ms since the epoch); None if it has none."""
        if self.every_ms:
            return now_ms - now_ms % self.every_ms
        at = _datetime(now_ms + 1000, self.tz)  # a tick at now_ms itself counts
        tick = next(CronSim(self.cron, at.replace(microsecond=0), reverse=True), None)
        return _ms(tick) if tick is not None else None

    def after(self, tick_ms: int) -> int:
        """Its first tick after ``tick_ms``."""
        if self.every_ms:
            return tick_ms - tick_ms % self.every_ms + self.every_ms
        return _ms(next(CronSim(self.cron, _datetime(tick_ms, self.tz))))

    def ticks(self, after_ms: int, until_ms: int, most: int) -> list[int]:
        """Its ticks in (``after_ms``, ``until_ms``], oldest first, the last ``most`` of them."""
        if self.every_ms:
            last = until_ms - until_ms % self.every_ms
            first = max(self.after(after_ms), last - (most - 1) * self.every_ms)
            return list(range(first, last + 1, self.every_ms)) if first <= last else []
        out: list[int] = []
        it = CronSim(self.cron, _datetime(until_ms + 1000, self.tz).replace(microsecond=0),
                     reverse=True)  # fmt: skip
        for tick in it:
            t = _ms(tick)
            if t <= after_ms or len(out) == most:
                break
            if t <= until_ms:
                out.append(t)
        return out[::-1]


def _datetime(ms: int, tz: str) -> dt.datetime:
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    return dt.datetime.fromtimestamp(ms / 1000, zone)


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def load(settings: Settings) -> list[Schedule]:
    """The schedules of ``BUS_SCHEDULE_FILE`` (none when it is not set), checked."""
    if not settings.schedule_file:
        return []
    path = Path(settings.schedule_file)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"BUS_SCHEDULE_FILE: cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"BUS_SCHEDULE_FILE: {path} is not TOML: {exc}") from None
    return [_schedule(name, entry, settings) for name, entry in table.items()]


def _schedule(name: str, entry: Any, settings: Settings) -> Schedule:
    def bad(why: str) -> SettingsError:
        return SettingsError(f"BUS_SCHEDULE_FILE: schedule {name!r}: {why}")

    if not NAME_RE.match(name):
        raise bad("a schedule's name has 1 to 64 letters, digits, _ . or -")
    if not isinstance(entry, dict):
        raise bad("not a table: write it as [name] with its keys below")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise bad(f"unknown keys {unknown}; known: {', '.join(KEYS)}")
    queue = entry.get("queue")
    if queue not in settings.queues:
        raise bad(f"queue {queue!r} is not one of BUS_QUEUES ({', '.join(settings.queues)})")
    if ("cron" in entry) == ("every_s" in entry):
        raise bad("give either cron or every_s")
    payload = entry.get("payload")
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise bad(f"the payload cannot travel as JSON ({exc})") from None
    try:
        priority = check_priority(entry.get("priority"))
        timeout_s = check_timeout(entry.get("timeout_s"))
    except ValueError as exc:
        raise bad(str(exc)) from None
    track = entry.get("track", False)
    if not isinstance(track, bool):
        raise bad("track must be true or false")
    common = {"name": name, "queue": queue, "payload": payload, "priority": priority,
              "timeout_s": timeout_s, "track": track}  # fmt: skip
    if "every_s" in entry:
        every = entry["every_s"]
        if (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not 1 <= every <= MAX_EVERY_S
        ):
            raise bad(f"every_s must be a number of seconds from 1 to {MAX_EVERY_S} (a year)")
        if "tz" in entry:
            raise bad("tz goes with cron only (every_s counts from the epoch)")
        return Schedule(every_ms=int(every * 1000), **common)
    cron, tz = entry["cron"], entry.get("tz", "UTC")
    if not isinstance(tz, str):
        raise bad("tz must be a time zone name such as Europe/Paris")
    try:
        if tz != "UTC":
            ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(f"unknown time zone {tz!r}") from None
    if not isinstance(cron, str):
        raise bad("cron must be a string such as '*/5 * * * *'")
    try:
        CronSim(cron, dt.datetime.now(UTC))
    except (CronSimError, ValueError) as exc:
        raise bad(f"bad cron expression {cron!r}: {exc}") from None
    return Schedule(cron=cron, tz=tz, **common)
