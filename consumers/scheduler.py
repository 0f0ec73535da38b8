"""The schedulers: every worker fires the periodic schedules of its queue
(:mod:`consumers.schedules`), in its mover's pass (every ``BUS_MOVER_INTERVAL_S``), on Redis's
clock.

Each tick is sent by one script (``lua/fire.lua``) that compares it with the schedule's last tick
sent and moves that forward in the same step as the push: whatever number of workers (or
processes, or hosts) fire a schedule, one message per tick. Its envelope's id is
``<schedule>-<tick ms>`` and its ``ts`` the tick, so its latency counts from when it was due.

A new schedule starts at its next tick. Ticks that passed while no worker of the queue ran are
what ``BUS_SCHEDULE_MISSED`` says: ``latest`` (the default) sends one message, for the latest of
them, as soon as a worker runs again; ``all`` sends one for each (the last
:data:`MAX_CATCH_UP`); ``none`` sends none of them: a tick is sent only within
:func:`on_time_ms` of when it was due. Every pass also writes each schedule's next tick and
what it fires on (``bus:{q}:schedules``: ``/api/stats``, ``consumers status``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import redis

from consumers.schedules import Schedule
from producer import Settings, keys
from producer.store import envelope, scripts

log = logging.getLogger(__name__)
MAX_CATCH_UP = 1000  # BUS_SCHEDULE_MISSED=all: at most this many missed ticks sent, the latest


def on_time_ms(settings: Settings) -> int:
    """How late a tick may be sent under ``BUS_SCHEDULE_MISSED=none``: two passes of the mover
    and a second."""
    return int((2 * settings.mover_interval_s + 1) * 1000)


class Scheduler:
    """Fires ``schedules`` (those of one queue) on ``client``."""

    def __init__(self, client: redis.Redis, queue: str, schedules: Sequence[Schedule],
                 settings: Settings) -> None:  # fmt: skip
        self.client = client
        self.queue = queue
        self.schedules = [s for s in schedules if s.queue == queue]
        self.missed = settings.schedule_missed
        self.on_time_ms = on_time_ms(settings)
        self.result_ttl_ms = int(settings.result_ttl_s * 1000)
        self.key = keys.schedules(queue)
        self._shown: dict[str, int] = {}  # the next tick last written, per schedule
        self.sent = 0

    def fire(self) -> int:
        """One pass: send what is due. Returns how many messages were sent."""
        if not self.schedules:
            return 0
        seconds, micros = self.client.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        lasts = self.client.hmget(self.key, [s.name for s in self.schedules])
        sent = 0
        for schedule, last in zip(self.schedules, lasts, strict=True):
            latest = schedule.latest(now)
            if latest is None:
                continue
            if last is None:  # new: from its next tick on
                self._send(schedule, latest, b"")
            elif latest > int(last):
                for tick in self._due(schedule, int(last), latest, now):
                    sent += self._send(schedule, tick, self._message(schedule, tick))
                self._send(schedule, latest, b"")  # the ticks passed over, if any
            self._show(schedule, schedule.after(latest))
        self.sent += sent
        return sent

    def _due(self, schedule: Schedule, last: int, latest: int, now: int) -> list[int]:
        """The ticks in (last, latest] to send, as BUS_SCHEDULE_MISSED says."""
        if self.missed == "all":
            ticks = schedule.ticks(last, latest, MAX_CATCH_UP)
        elif self.missed == "none":
            ticks = [latest] if now - latest <= self.on_time_ms else []
        else:
            ticks = [latest]
        if len(schedule.ticks(last, latest, 2)) > 1:  # more than the one due now
            log.info("queue %s: schedule %s missed ticks since %d (no worker ran); "
                     "BUS_SCHEDULE_MISSED=%s sends %d", self.queue, schedule.name, last,
                     self.missed, len(ticks))  # fmt: skip
        return ticks

    def _message(self, schedule: Schedule, tick: int) -> bytes:
        env = envelope.new(schedule.payload, track=schedule.track, timeout_s=schedule.timeout_s,
                           priority=schedule.priority)  # fmt: skip
        return dataclasses.replace(env, id=f"{schedule.name}-{tick}", ts=tick).encode()

    def _send(self, schedule: Schedule, tick: int, raw: bytes) -> int:
        fire_keys = [keys.pending(self.queue), self.key, keys.tracking(self.queue)]
        if raw and schedule.track:
            fire_keys.append(keys.record(self.queue, f"{schedule.name}-{tick}"))
        args = (schedule.name, tick, raw, schedule.priority, self.result_ttl_ms)
        return 1 if int(scripts.FIRE(self.client, fire_keys, args)) == 1 else 0

    def _show(self, schedule: Schedule, next_ms: int) -> None:
        if self._shown.get(schedule.name) != next_ms:
            items: list[str | int] = [f"{schedule.name}:next", next_ms,
                                      f"{schedule.name}:spec", schedule.spec]  # fmt: skip
            self.client.hset(self.key, items=items)
            self._shown[schedule.name] = next_ms
