"""How numbers read in load-test reports: thousands separators, sensible precision, a dash for
null."""

from __future__ import annotations

import math

DASH = (
    "\u2013"  # an en dash: a value the run did not measure (null in the JSON); never written as 0
)


def count(n: float | None) -> str:
    """A count: ``12345`` reads ``12,345``."""
    return DASH if n is None else f"{n:,.0f}"


def ms(v: float | None) -> str:
    """Milliseconds: ``0.42``, ``4.2``, ``42``, ``1,234``."""
    if v is None:
        return DASH
    if v < 1:
        return f"{v:.2f}"
    return f"{v:.1f}" if v < 10 else f"{v:,.0f}"


def seconds(v: float | None) -> str:
    """A duration in seconds: ``0.002``, ``2.80``, ``41.2`` (resumes are often milliseconds)."""
    if v is None:
        return DASH
    if v < 1:
        return f"{v:.3f}"
    return f"{v:.2f}" if v < 10 else f"{v:,.1f}"


def moment(v: float | None) -> str:
    """A time on the run's clock, seconds since traffic start, to a tenth: ``6.7``."""
    return DASH if v is None else f"{v:.1f}"


def rate(v: float | None) -> str:
    """A rate: whole numbers from 100 up, one decimal below."""
    if v is None:
        return DASH
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def percent(part: float | None, whole: float | None) -> str:
    """``part`` of ``whole`` in percent; 100% only when all of it, so 99.97% reads 99.9%."""
    if part is None or not whole:
        return DASH
    if part == whole:
        return "100%"
    return f"{math.floor(1000 * part / whole) / 10:.1f}%"


def duration(v: float | None) -> str:
    """A wall time: ``42.3 s``, ``6 min 12 s``, ``1 h 02 min``."""
    if v is None:
        return DASH
    if v < 60:
        return f"{v:.1f} s"
    minutes, secs = divmod(round(v), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
