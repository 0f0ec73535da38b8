"""The oldest message in each redis-bus worker's hands, sampled on a clock while the traffic runs.

Every worker process writes into its stats hash, every ``BUS_STATS_INTERVAL_S``, when the
oldest message in its handlers' hands started (``oldest_started_ms``, 0: none), that message's
limit and how many handlers it gave up on still run (``abandoned``); see
:mod:`producer.observe.inhand`. A thread reads those hashes every ``every_s`` and keeps, per
worker (a supervised one: the oldest over its processes), the age of that message when the
process wrote it (``updated_ms - oldest_started_ms``: exact, however late the sample). A hash
not written for :data:`SILENT_WRITES` intervals is a process that died, and is left out until
its successor writes it again. A hanging handler shows as a saw-tooth that the time limit cuts.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from loadtest.runner.sampler import Sampler
from loadtest.runner.stack import Consumer, Stack
from producer import keys

SILENT_WRITES = 3  # a stats hash this many intervals old belongs to a process gone


@dataclass
class Samples:
    """Seconds since traffic start, and per worker its oldest in-hand age (ms) and its
    abandoned handlers at each time (None: none of its processes wrote lately)."""

    every_s: float
    t: list[float] = field(default_factory=list)
    age_ms: dict[str, list[int | None]] = field(default_factory=dict)
    abandoned: dict[str, list[int | None]] = field(default_factory=dict)
    limit_ms: int = 0  # the largest limit seen of a message in hand

    def series(self) -> dict[str, Any]:
        """For series.json."""
        return {"every_s": self.every_s, "t": self.t, "oldest_age_ms": self.age_ms,
                "abandoned": self.abandoned, "limit_ms": self.limit_ms}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """For summary.json: the largest age and abandoned count per worker, and over all."""
        per = {
            who: {"max_age_ms": max((a for a in ages if a is not None), default=0),
                  "max_abandoned": max((a for a in self.abandoned[who] if a is not None),
                                       default=0)}
            for who, ages in self.age_ms.items()
        }  # fmt: skip
        return {
            "every_s": self.every_s,
            "samples": len(self.t),
            "limit_ms": self.limit_ms,
            "max_age_ms": max((w["max_age_ms"] for w in per.values()), default=0),
            "workers": per,
        }


class InHandWatch(Sampler):
    """Samples the stats hashes of ``stack``'s redis-bus workers every ``every_s`` until
    :meth:`finish`."""

    def __init__(self, stack: Stack, every_s: float, interval_s: float, t0: float) -> None:
        super().__init__("inhand-watch", every_s)
        self.workers = [c for c in stack.consumers if c.sys == "bus" and c.mode == "prodcons"]
        self.t0 = t0
        self.silent_ms = int(SILENT_WRITES * interval_s * 1000)
        self.samples = Samples(every_s)
        self._redis = stack.admin()
        self.start()

    def finish(self) -> Samples:
        """Stop sampling; what was seen."""
        self.stop()
        return self.samples

    def sample(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):  # Redis busy: a gap
            self._sample()

    def _sample(self) -> None:
        now_ms = int(time.time() * 1000)
        seen = {c.who: self._read(c, now_ms) for c in self.workers}
        self.samples.t.append(round(now_ms / 1000 - self.t0, 2))
        for who, (age, abandoned) in seen.items():
            self.samples.age_ms.setdefault(who, []).append(age)
            self.samples.abandoned.setdefault(who, []).append(abandoned)

    def _read(self, c: Consumer, now_ms: int) -> tuple[int | None, int | None]:
        """(oldest age, abandoned) over ``c``'s processes that wrote lately; Nones if none."""
        age = abandoned = None
        for name in c.names:
            h = {_text(k): _text(v) for k, v in
                 self._redis.hgetall(keys.stats("worker", f"{c.dest}:{name}")).items()}  # fmt: skip
            updated = _int(h.get("updated_ms"))
            if "slots" not in h or now_ms - updated > self.silent_ms:
                continue
            started = _int(h.get("oldest_started_ms"))
            mine = max(0, updated - started) if started else 0
            age = max(age or 0, mine)
            abandoned = (abandoned or 0) + _int(h.get("abandoned"))
            if started:
                self.samples.limit_ms = max(self.samples.limit_ms, _int(h.get("oldest_limit_ms")))
        return age, abandoned


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0
