"""Bounded waits: poll a condition until it holds; past the deadline, fail naming what was
awaited (and, for a check that lists problems, the last ones seen). And what a wait took."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producer.errors import BusError


class WaitTimeout(BusError, AssertionError):
    """A condition did not hold before its deadline (an AssertionError: a test shows it as a
    failed expectation, not as an error of the harness)."""


def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    every_s: float = 0.05,
    *,
    ignore: tuple[type[BaseException], ...] = (),
    error: Callable[[str], BaseException] = WaitTimeout,
) -> Any:
    """Poll ``predicate`` every ``every_s`` until it returns something truthy, and return that;
    an exception of ``ignore`` counts as "not yet". After ``timeout_s``, raise ``error`` (by
    default :class:`WaitTimeout`) naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(*ignore):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)


def wait_no_problems(
    check: Callable[[], list[str]],
    timeout_s: float,
    what: str,
    every_s: float = 0.05,
    *,
    error: Callable[[str], BaseException] = WaitTimeout,
) -> None:
    """Poll ``check`` (the problems still in the way) until it returns none; fail after
    ``timeout_s`` naming ``what`` and the last problems seen."""
    last: list[str] = []

    def settled() -> bool:
        last[:] = check()
        return not last

    try:
        wait_for(settled, timeout_s, what, every_s, error=_Unsettled)
    except _Unsettled as exc:
        raise error(f"{exc}: {last}") from None


class _Unsettled(Exception):
    pass


@dataclass
class FailoverTiming:
    """How long a failover took: until the new primary said so, and until all agreed."""

    promoted_s: float
    total_s: float

    def __str__(self) -> str:
        return f"promoted {self.promoted_s:.3f}s, converged {self.total_s:.3f}s"


@dataclass
class Timer:
    """Seconds since creation, for printing what a step took."""

    started: float = field(default_factory=time.monotonic)

    def __call__(self) -> float:
        return time.monotonic() - self.started
