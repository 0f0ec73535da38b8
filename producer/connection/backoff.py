"""Capped exponential backoff with full jitter, for the daemons' reconnect loops."""

from __future__ import annotations

import random


class Backoff:
    """Delay ``n`` is uniform in ``[0, min(cap, base * 2**n)]``; :meth:`reset` after a success."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        """Forget past failures (call once an attempt succeeded)."""
        self.failures = 0
