"""The bus-wide totals: ``bus:{stats}:totals`` and its history, written by every process's stats
flush (one idempotent script, ``producer/store/lua/flush_stats.lua``) and read by the overview,
``/api/history`` and ``/metrics``.

A field of the totals is ``<counter>|<label>=<value>|...`` with URL-quoted values
(:func:`series_field`); :func:`parse_totals` gives them back as dicts. At most once a second
the flush also appends a sample of the :data:`HISTORY_SERIES` sums to ``bus:{stats}:history``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

import redis

from producer.store import keys

HISTORY_LEN = 360  # samples of bus:{stats}:history, one a second at most
HISTORY_SERIES = ("pushed", "handled", "published", "published_zero", "received", "lost",
                  "dead_lettered")  # fmt: skip
APPLIED_TTL_S = 86400
RATE_WINDOW_MS = 5000  # /api/stats "rates": over the history's last five seconds or so
GAP_MS = 3000  # history samples further apart than this: the chart breaks its line


def series_field(counter: str, labels: Mapping[str, str]) -> str:
    """A field of ``bus:{stats}:totals``: ``counter|label=value|...``, values URL-quoted."""
    return "|".join((counter, *(f"{k}={quote(v, safe='')}" for k, v in labels.items())))


def read_history(client: redis.Redis) -> dict[str, Any]:
    """The bus-wide rates (messages per second) between consecutive samples of
    ``bus:{stats}:history``, oldest first: ``{"series", "points": [{"t", <series>...}]}``.
    A point further than :data:`GAP_MS` from the one before starts a new line (``"gap"``)."""
    raw: list[bytes] = client.lrange(keys.STATS_HISTORY, 0, -1)  # type: ignore[assignment]
    samples = [parse_sample(x) for x in raw]
    points = []
    for before, after in itertools.pairwise(samples):
        dt = after["t"] - before["t"]
        if dt <= 0:
            continue
        point: dict[str, Any] = {"t": after["t"], "gap": dt > GAP_MS}
        for name in HISTORY_SERIES:
            point[name] = round(max(0, after.get(name, 0) - before.get(name, 0)) * 1000 / dt, 2)
        points.append(point)
    return {"series": list(HISTORY_SERIES), "points": points}


def parse_totals(raw: Any) -> list[dict[str, Any]]:
    """``bus:{stats}:totals`` as ``[{"counter", "labels", "value"}]``, sorted."""
    out = []
    for field, value in raw.items():
        counter, *pairs = field.decode().split("|")
        labels = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        out.append(
            {"counter": counter, "labels": {k: unquote(v) for k, v in labels.items()},
             "value": int(value)}
        )  # fmt: skip
    out.sort(key=lambda c: (c["counter"], sorted(c["labels"].items())))
    return out


def sum_counters(counters: Iterable[dict[str, Any]], counter: str, **labels: str) -> int:
    """The sum of ``counter`` over the totals whose labels include ``labels``."""
    return sum(
        c["value"]
        for c in counters
        if c["counter"] == counter and all(c["labels"].get(k) == v for k, v in labels.items())
    )


def parse_sample(raw: bytes) -> dict[str, int]:
    try:
        data = json.loads(raw)
        return {k: int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {"t": 0}


def recent_rates(samples: list[dict[str, int]]) -> dict[str, float | None]:
    """Per second between the newest sample and the oldest of the last few seconds."""
    samples = [s for s in samples if s.get("t")]
    if len(samples) < 2 or samples[-1]["t"] <= samples[0]["t"]:
        return dict.fromkeys(HISTORY_SERIES)
    first, last = samples[0], samples[-1]
    dt = last["t"] - first["t"]
    return {
        n: round(max(0, last.get(n, 0) - first.get(n, 0)) * 1000 / dt, 2) for n in HISTORY_SERIES
    }
