"""Time-based measures of a row: latency percentiles, resume after a fault, stalls."""

from __future__ import annotations

import bisect
import itertools

from loadtest.runner.faults import Window


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(values[-1], 2)}


def resume_after(faults: list[Window], deliveries: list[float]) -> float | None:
    """Worst time from the end of a fault to the first delivery after it."""
    worst = None
    for w in faults:
        i = bisect.bisect_left(deliveries, w.end)
        if i < len(deliveries):
            gap = round(deliveries[i] - w.end, 3)
            worst = gap if worst is None else max(worst, gap)
    return worst


def waiting_stall(messages: list[tuple[float, float | None]], end: float) -> float | None:
    """Longest time between two deliveries while some message waited through all of it
    (an undelivered message waits until ``end``)."""
    if not messages:
        return None
    done = sorted((d if d is not None else end, t0) for t0, d in messages)
    times = sorted({d for d, _ in done})
    suffix_min = [0.0] * len(done)  # min send time of messages delivered at or after index
    low = float("inf")
    for i in range(len(done) - 1, -1, -1):
        low = min(low, done[i][1])
        suffix_min[i] = low
    worst, prev = 0.0, min(t0 for t0, _ in messages)
    for t in times:
        i = bisect.bisect_left(done, (t, float("-inf")))
        if suffix_min[i] <= prev:
            worst = max(worst, t - prev)
        prev = t
    return round(worst, 3)


def silent_stall(receptions: list[float], sends: list[float]) -> float | None:
    """Longest silence of a subscriber while messages were being published to it."""
    if not sends:
        return None
    marks = [sends[0], *(t for t in receptions if sends[0] <= t <= sends[-1]), sends[-1]]
    worst = 0.0
    for a, b in itertools.pairwise(marks):
        i = bisect.bisect_right(sends, a)
        if i < len(sends) and sends[i] < b:
            worst = max(worst, b - a)
    return round(worst, 3)
