"""Plain-text tables, and the numbers in them as people read them (``python -m consumers
status``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from producer.observe.stats import LATENCY_BUCKETS_MS

MAX_CELL = 20  # longer names are cut so that the tables fit in about 120 columns
Row = Sequence[str]


def table(title: str, columns: Sequence[str], rows: Sequence[Row]) -> str:
    """A titled table; a column named ``>x`` is right-aligned; long cells are cut."""
    if not rows:
        return f"{title}\n  (none)"
    heads = [c.lstrip(">") for c in columns]
    right = [c.startswith(">") for c in columns]
    cells = [[_cut(str(x)) for x in row] for row in rows]
    widths = [max(len(r[i]) for r in [heads, *cells]) for i in range(len(columns))]

    def line(row: Row) -> str:
        parts = (
            x.rjust(w) if r else x.ljust(w) for x, w, r in zip(row, widths, right, strict=True)
        )
        return ("  " + "  ".join(parts)).rstrip()

    return "\n".join([title, line(heads), *(line(r) for r in cells)])


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def seconds_up(ms: int) -> str:
    """Seconds rounded up to a tenth: a time past a deadline never prints as equal to it."""
    return f"{math.ceil(ms / 100) / 10:.1f}"


def seconds(ms: int) -> str:
    """Seconds to a tenth, or to the ms when a tenth would round them."""
    return f"{ms / 1000:.1f}" if ms % 100 == 0 else f"{ms / 1000:.3f}"


def num(value: int | None) -> str:
    """A count; ``-`` for none."""
    return "-" if value is None else str(value)


def per_s(value: float | None) -> str:
    """A rate to a tenth; ``-`` for none."""
    return "-" if value is None else f"{value:.1f}"


def against(value_ms: int | None, limit_ms: int) -> str:
    """``2.4 / 3 s``: an age or a time deaf beside its limit; ``-`` for none."""
    shown = "-" if value_ms is None else seconds_up(value_ms)
    return f"{shown} / {limit_ms / 1000:g} s"


def duration(value: int | None) -> str:
    """A duration for people: ``850 ms``, ``23.1 s``, ``12m05s``, ``3h02m``; ``-`` for none."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    minutes, secs = divmod(value // 1000, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def bound(latency: dict[str, Any], name: str) -> str:
    """A latency percentile as its bucket's bound (``<=25``, ``>60000`` past the last)."""
    if not latency["count"]:
        return "-"
    value = latency[name]
    return f">{LATENCY_BUCKETS_MS[-1]}" if value is None else f"<={value:g}"
