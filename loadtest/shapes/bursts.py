"""Bursts: -u users for ``--burst`` seconds, then none for ``--idle`` seconds, until -t.

The idle gaps are meant to be longer than Redis's idle ``timeout``: the server closes the
producers' pooled connections between bursts, and the next burst shows whether they are
replaced before use (redis-bus) or surface as errors.
"""

from __future__ import annotations

from loadtest.shapes import DEFAULTS, CommonShape, in_burst


class Bursts(CommonShape):
    """On for ``--burst`` s, off for ``--idle`` s."""

    def users_at(self, elapsed_s: float, users: int, rate: float) -> tuple[int, float]:
        burst_s = float(self.option("burst", DEFAULTS["burst"]))
        idle_s = float(self.option("idle", DEFAULTS["idle"]))
        if in_burst(elapsed_s, burst_s, idle_s):
            return users, rate
        return 0, float(max(rate, users))  # all at once: the gap starts when the burst ends
