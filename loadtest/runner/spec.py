"""What a load-test scenario is made of: its load, its consumers, its :class:`Fault` s (at
fractions of the traffic time) or a :class:`Rotation` of faults on a clock. The scenarios
themselves are in :mod:`loadtest.runner.scenarios`."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` (see :mod:`loadtest.runner.faults`) at ``at`` x traffic time."""

    kind: str
    at: float
    hold_s: float = 0.0  # how long it lasts (black hole)
    until: float = 0.0  # or until when, as a fraction of the traffic time
    arg: str = ""  # e.g. the client type a CLIENT KILL targets

    def hold(self, traffic_s: float) -> float:
        """Seconds the fault lasts in a suite whose traffic lasts ``traffic_s``."""
        return self.hold_s or max(0.0, (self.until - self.at) * traffic_s)


@dataclass(frozen=True)
class Rotation:
    """Bursts of traffic with idle gaps, and ``faults`` applied in turn, one every period.

    The period is ``every_s``, or shorter when the traffic is too short for one of each fault
    (a soak shortened to seconds keeps its whole story). A period holds two bursts when it is
    long enough (one otherwise), each followed by ``idle_s`` of silence (at most half the
    burst's cycle); each fault starts 40% into the first burst of its period, so it strikes
    mid-traffic and a restart is over before the silence."""

    faults: tuple[Fault, ...]
    every_s: float = 60.0
    idle_s: float = 5.0

    def period_s(self, traffic_s: float) -> float:
        return min(self.every_s, traffic_s / len(self.faults))

    def cycle_s(self, traffic_s: float) -> tuple[float, float]:
        """(burst, idle) seconds of the load shape."""
        period = self.period_s(traffic_s)
        cycle = period / 2 if period >= 8 * self.idle_s else period
        idle = min(self.idle_s, cycle / 2)
        return cycle - idle, idle

    def schedule(self, traffic_s: float) -> tuple[Fault, ...]:
        """The faults of a run whose traffic lasts ``traffic_s`` (``at`` as a fraction)."""
        period = self.period_s(traffic_s)
        offset = 0.4 * self.cycle_s(traffic_s)[0]
        out, k = [], 0
        while k * period + offset + 1.0 < traffic_s:
            fault = self.faults[k % len(self.faults)]
            out.append(replace(fault, at=(k * period + offset) / traffic_s))
            k += 1
        return tuple(out)


@dataclass(frozen=True)
class Scenario:
    """One scenario of the suite."""

    name: str
    title: str
    description: str
    modes: tuple[str, ...]
    traffic_s: float
    quick_traffic_s: float | None  # None: left out of the quick suite
    users: tuple[str, ...]  # locust user classes; every class gets ``users_per_class`` users
    users_per_class: int = 10
    rate: float = 15.0  # messages per second per user
    payload_bytes: int = 0  # padding added to each payload
    shape: str = "steady"
    shape_args: tuple[str, ...] = ()
    faults: tuple[Fault, ...] = ()
    setup: tuple[str, ...] = ()  # faults applied before the traffic starts, kept to the end
    handler_sleep_s: float = 0.0
    slow_subscriber_sleep_s: float = 0.0  # > 0: the second subscriber of each system is slow
    # during the window of the "slow-subscriber" fault
    at_most_once_queue: bool = False
    queues: tuple[str, ...] = ("default",)  # more than one: one redis-bus worker each
    cluster_shards: int = 0  # > 0: a Redis Cluster of that many primaries, a replica each
    baseline: bool = True  # the naive app and consumers run beside redis-bus
    in_quick_suite: bool = True  # False: its quick form runs only when named
    rotation: Rotation | None = None  # faults on a clock, and the bursts shape around them
    redis_timeout_s: int = 0  # > 0: redis-server's idle ``timeout``, restarts included
    memory_every_s: float = 0.0  # > 0: sample every process's RSS about this often
    processes: int = 0  # > 0: each redis-bus worker is ``--processes`` that many, supervised
    bus_settings: tuple[tuple[str, str], ...] = ()  # BUS_* settings of this scenario's own
    hang_share: float = 0.0  # share of the messages whose handler never returns
    die_share: float = 0.0  # share of the messages whose handler ends its process
    drain_s: float = 0.0  # > 0: the drain's bound, instead of the suite's
    inhand_every_s: float = 0.0  # > 0: sample the workers' oldest message in hand this often

    def duration_s(self, quick: bool) -> float:
        """Traffic seconds in this suite."""
        return self.quick_traffic_s if quick and self.quick_traffic_s else self.traffic_s

    def faults_for(self, traffic_s: float) -> tuple[Fault, ...]:
        """Every fault of a run whose traffic lasts ``traffic_s``."""
        return self.faults + (self.rotation.schedule(traffic_s) if self.rotation else ())

    def shape_args_for(self, traffic_s: float) -> tuple[str, ...]:
        """The load shape's options for a run whose traffic lasts ``traffic_s``."""
        if self.rotation is None:
            return self.shape_args
        burst, idle = self.rotation.cycle_s(traffic_s)
        return ("--burst", f"{burst:g}", "--idle", f"{idle:g}", *self.shape_args)
