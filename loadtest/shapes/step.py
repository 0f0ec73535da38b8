"""Step load: ``--step-users`` users at first, as many more every ``--step-s`` seconds up to -u,
until -t."""

from __future__ import annotations

from loadtest.shapes import DEFAULTS, CommonShape, step_count


class Step(CommonShape):
    """A staircase up to -u users."""

    def users_at(self, elapsed_s: float, users: int, rate: float) -> tuple[int, float]:
        step_users = int(self.option("step_users", DEFAULTS["step_users"]))
        step_s = float(self.option("step_s", DEFAULTS["step_s"]))
        return step_count(elapsed_s, step_users, step_s, users), rate
