"""Steady load: -u users (spawned at -r per second) until -t."""

from __future__ import annotations

from loadtest.shapes import CommonShape


class Steady(CommonShape):
    """-u users until -t."""

    def users_at(self, elapsed_s: float, users: int, rate: float) -> tuple[int, float]:
        return users, rate
