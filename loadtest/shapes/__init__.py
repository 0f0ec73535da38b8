"""Load shapes for the locustfile: one class per module, so ``-f`` picks one or a directory.

``steady.Steady`` (-u users until -t), ``step.Step`` (``--step-users`` more every ``--step-s``
seconds up to -u) and ``bursts.Bursts`` (-u users for ``--burst`` seconds, then none for
``--idle`` seconds, again and again). Each reads locust's common options (``use_common_options``):
-u, -r and -t, and stops the test at -t (none: runs until stopped)::

    locust -f loadtest/locustfile.py,loadtest/shapes/bursts.py --headless -u 20 -r 20 -t 30s \\
        --burst 3 --idle 5
    locust -f loadtest/locustfile.py,loadtest/shapes --class-picker   # choose one in the web UI

Their own options are registered by the locustfile (:func:`add_options`), so they exist, and
show in the web UI, whichever shape runs. Locust skips this file (its name starts with "_").
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from locust import LoadTestShape

DEFAULT_USERS = 1
DEFAULT_SPAWN_RATE = 1.0
DEFAULTS = {"step_users": 5, "step_s": 10.0, "burst": 5.0, "idle": 10.0}


def add_options(parser: Any) -> None:
    """The shapes' options, on locust's argument parser."""
    parser.add_argument("--step-users", type=_positive(int), default=DEFAULTS["step_users"],
                       help="Step shape: users added at each step, up to -u")  # fmt: skip
    parser.add_argument("--step-s", type=_positive(float), default=DEFAULTS["step_s"],
                       help="Step shape: seconds between steps")  # fmt: skip
    parser.add_argument("--burst", type=_positive(float), default=DEFAULTS["burst"],
                       help="Bursts shape: seconds of each burst at -u users")  # fmt: skip
    parser.add_argument("--idle", type=_positive(float), default=DEFAULTS["idle"],
                       help="Bursts shape: seconds with 0 users between bursts; longer than "
                       "Redis's idle `timeout`, the server closes pooled connections")  # fmt: skip


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


class CommonShape(LoadTestShape):
    """Base of the shapes: reads -u, -r, -t (and the shape options) when it ticks, so values
    typed in the web UI's form apply; returns None (stop) once -t has passed."""

    abstract = True
    use_common_options = True

    def option(self, name: str, default: Any) -> Any:
        """A parsed option, or ``default`` when absent (no runner yet, or not registered)."""
        options = self.runner.environment.parsed_options if self.runner else None
        value = getattr(options, name, None)
        return default if value is None else value

    def tick(self) -> tuple[int, float] | None:
        run_time_s = self.option("run_time", 0)
        elapsed_s = self.get_run_time()
        if run_time_s and elapsed_s >= run_time_s:
            return None
        users = int(self.option("num_users", DEFAULT_USERS))
        rate = float(self.option("spawn_rate", DEFAULT_SPAWN_RATE))
        return self.users_at(elapsed_s, users, rate)

    def users_at(self, elapsed_s: float, users: int, rate: float) -> tuple[int, float]:
        """(user count, spawn rate) at ``elapsed_s`` seconds into the test."""
        raise NotImplementedError


def step_count(elapsed_s: float, step_users: int, step_s: float, users: int) -> int:
    """Users after ``elapsed_s``: ``step_users`` at 0 s, as many more every ``step_s``."""
    return min(users, step_users * (1 + math.floor(elapsed_s / step_s)))


def in_burst(elapsed_s: float, burst_s: float, idle_s: float) -> bool:
    """True during a burst: the first ``burst_s`` of every ``burst_s + idle_s`` period."""
    return elapsed_s % (burst_s + idle_s) < burst_s
