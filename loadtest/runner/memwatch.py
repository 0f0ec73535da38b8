"""The soak's memory watch: every process's RSS and Redis's memory, sampled on a clock, and how
fast each grows (a least-squares line through the samples after the warm-up).

A thread samples every ``every_s`` seconds: the RSS (``VmRSS``) of every process the runner
started that is still running, and of their children (gunicorn's workers, ``web/1``... in the
order they appeared: a worker gunicorn replaced is a new series), and Redis's ``used_memory``
and ``used_memory_rss`` (its process's RSS) from ``INFO memory`` (none while Redis restarts or
is frozen; a restarted Redis reloads the same data, so ``used_memory`` compares across). The
samples go to ``series.json``; per process, the RSS at the start, after the warm-up, at the end
and at its largest, with the growth per minute over the fit window and over its second half
(growth that levels off shows as a second half near zero), go to ``summary.json``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtest.runner.sampler import Sampler
from loadtest.runner.stack import Stack

WARM_UP_S = 60.0  # imports done, pools and buffers at their working size: the fit starts here
MIN_FIT_POINTS = 3
KIB = 1024
MIB = 1024 * 1024


def every_s(nominal_s: float, traffic_s: float) -> float:
    """The sampling interval: ``nominal_s``, or shorter so that a short run has ~30 samples."""
    return max(0.5, min(nominal_s, traffic_s / 30))


def fit_from_s(traffic_s: float) -> float:
    """Where the fit starts: after the first minute, or the first third of a shorter run."""
    return min(WARM_UP_S, traffic_s / 3)


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, value) points, per minute; None under 3 points."""
    if len(points) < MIN_FIT_POINTS:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def figures(t: list[float], values: list[float | None], fit_from: float, unit: float) -> dict:
    """Start, after the warm-up, end and max (in MiB) of one series in ``unit`` bytes, and its
    growth in KiB per minute from ``fit_from`` on, and over the second half of that window."""
    points = [(ti, v * unit) for ti, v in zip(t, values, strict=True) if v is not None]
    if not points:
        return {"samples": 0}
    fit = [p for p in points if p[0] >= fit_from]
    late = [p for p in fit if p[0] >= (fit[0][0] + fit[-1][0]) / 2] if fit else []
    growth, late_growth = slope_per_min(fit), slope_per_min(late)
    return {
        "samples": len(points),
        "start_mib": round(points[0][1] / MIB, 2),
        "warm_mib": round(fit[0][1] / MIB, 2) if fit else None,
        "end_mib": round(points[-1][1] / MIB, 2),
        "max_mib": round(max(v for _, v in points) / MIB, 2),
        "growth_kib_per_min": None if growth is None else round(growth / KIB, 1),
        "late_growth_kib_per_min": None if late_growth is None else round(late_growth / KIB, 1),
    }


@dataclass
class Samples:
    """What the watch saw: times in seconds since traffic started, one value per time and
    series (None: the process was not there, or Redis did not answer)."""

    every_s: float
    t: list[float] = field(default_factory=list)
    rss_kib: dict[str, list[int | None]] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    redis_used: list[int | None] = field(default_factory=list)  # bytes
    redis_rss: list[int | None] = field(default_factory=list)

    def add(self, t: float, rss: dict[str, int], used: int | None, rss_redis: int | None) -> None:
        for name in rss:
            self.rss_kib.setdefault(name, [None] * len(self.t))
        self.t.append(round(t, 2))
        for name, column in self.rss_kib.items():
            column.append(rss.get(name))
        self.redis_used.append(used)
        self.redis_rss.append(rss_redis)

    def series(self) -> dict[str, Any]:
        """For series.json."""
        return {
            "every_s": self.every_s,
            "t": self.t,
            "rss_kib": self.rss_kib,
            "redis_used_memory": self.redis_used,
            "redis_rss": self.redis_rss,
        }

    def summary(self, fit_from: float) -> dict[str, Any]:
        """For summary.json: the figures of every process and of Redis."""
        procs = [
            {"name": name, "role": self.roles.get(name, ""), "pid": self.pids.get(name),
             **figures(self.t, list(column), fit_from, KIB)}
            for name, column in self.rss_kib.items()
        ]  # fmt: skip
        redis_figures = {
            "used_memory": figures(self.t, list(self.redis_used), fit_from, 1),
            "used_memory_rss": figures(self.t, list(self.redis_rss), fit_from, 1),
        }
        return {
            "every_s": self.every_s,
            "fit_from_s": round(fit_from, 1),
            "samples": len(self.t),
            "processes": procs,
            "redis": redis_figures,
        }


class MemWatch(Sampler):
    """Samples ``stack``'s processes every ``every_s`` from now until :meth:`finish`."""

    def __init__(self, stack: Stack, every: float, t0: float) -> None:
        super().__init__("memwatch", every)
        self.stack = stack
        self.t0 = t0
        self.samples = Samples(every)
        self._children: dict[int, str] = {}  # pid -> series name, of the processes' children
        self._numbered: dict[str, int] = {}  # parent -> children named so far
        self._redis = redis.Redis(port=stack.redis_port, socket_timeout=1,
                                  socket_connect_timeout=1, protocol=2,
                                  retry=Retry(NoBackoff(), 0))  # fmt: skip
        self.start()

    def finish(self) -> Samples:
        """One last sample, then stop."""
        self.stop()
        self.sample()
        self._redis.close()
        return self.samples

    def sample(self) -> None:
        now = time.time()
        rss: dict[str, int] = {}
        parents = {}
        for proc in self.stack.procs.all:
            # Redis's RSS comes from INFO (used_memory_rss): its process is a new one after
            # each restart, and its children are its own forks (an AOF rewrite).
            if proc.popen.poll() is not None or proc.stopping or proc.is_redis:
                continue
            kib = rss_kib(proc.popen.pid)
            if kib is None:
                continue
            rss[proc.name] = kib
            self._note(proc.name, proc.popen.pid)
            parents[proc.popen.pid] = proc.name
        for pid, parent in children(parents):
            if pid not in self._children:
                number = self._numbered[parent] = self._numbered.get(parent, 0) + 1
                self._children[pid] = f"{parent}/{number}"
            name = self._children[pid]
            kib = rss_kib(pid)
            if kib is not None:
                rss[name] = kib
                self._note(name, pid)
        used = rss_redis = None
        if not self.stack.shards:
            with contextlib.suppress(redis.RedisError, OSError):
                info = self._redis.info("memory")
                used, rss_redis = int(info["used_memory"]), int(info["used_memory_rss"])
        self.samples.add(now - self.t0, rss, used, rss_redis)

    def _note(self, name: str, pid: int) -> None:
        self.samples.pids[name] = pid
        if name not in self.samples.roles:
            self.samples.roles[name] = role_of(self.stack, name)


def role_of(stack: Stack, name: str) -> str:
    """What a series is, in words: "redis-bus worker", "baseline web worker"..."""
    base, _, child = name.partition("/")
    for c in stack.consumers:
        if c.who == base:
            system = "redis-bus" if c.sys == "bus" else "baseline"
            return f"{system} {'worker' if c.mode == 'prodcons' else 'subscriber'}"
    webs = {"web": "redis-bus web", "baseline-web": "baseline web"}
    if base in webs:
        return f"{webs[base]} worker" if child else f"{webs[base]} (gunicorn master)"
    return "locust (load generator)" if base == "locust" else base


def rss_kib(pid: int) -> int | None:
    """A process's resident set in KiB (Linux), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def children(parents: dict[int, str]) -> list[tuple[int, str]]:
    """(pid, parent's name) of every live child of the ``parents`` pids, by pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        if ppid in parents and fields[0] not in "ZX":
            found.append((int(entry.name), parents[ppid]))
    return sorted(found)
