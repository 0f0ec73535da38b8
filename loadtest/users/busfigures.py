"""The bus's own delivery figures next to a load generator's request figures.

Reads redis-bus's ``GET /api/stats`` and turns it into deltas since a snapshot taken when the
test started: per mode, what was sent, what the consumers did with it, what is still queued, and
end-to-end latency percentiles from the delta of the latency buckets. Counters are tracked per
process (``role`` + ``id``), so a process that restarts (its counters start again at 0) or whose
stats hash expires still counts what it did during the test.

No locust here: :mod:`loadtest.users.busmonitor` polls in the background and the locustfile shows
the figures in locust's log, its summary and a web UI tab.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any

from producer.observe.overview import percentiles as histogram_percentiles
from producer.observe.stats import COUNTERS, LAT_FIELDS

FIELDS = (*COUNTERS, *LAT_FIELDS)
# (key, label) per mode, in display order; "depth" and "in_flight" are levels, not deltas.
PRODCONS = (
    ("pushed", "pushed"),
    ("handled", "handled"),
    ("depth", "in queue"),
    ("in_flight", "in flight"),
    ("dead_lettered", "dead-lettered"),
    ("retried", "retried"),
    ("reconnects", "reconnects"),
    ("unaccounted", "unaccounted"),
)
PUBSUB = (
    ("published", "published"),
    ("published_zero", "to nobody"),
    ("received", "received"),
    ("lost", "lost"),
    ("duplicates", "duplicates"),
    ("reconnects", "reconnects"),
    ("deadline_misses", "deadline misses"),
)
# The web UI's table: (label, prodcons key, pubsub key), the two modes side by side.
TABLE = (
    ("sent (pushed / published)", "pushed", "published"),
    ("published to nobody", None, "published_zero"),
    ("handled / received", "handled", "received"),
    ("in queue (depth now)", "depth", None),
    ("in flight now", "in_flight", None),
    ("dead-lettered", "dead_lettered", None),
    ("retried", "retried", None),
    ("lost (sequence gaps)", None, "lost"),
    ("duplicates", None, "duplicates"),
    ("reconnects", "reconnects", "reconnects"),
    ("deadline misses", None, "deadline_misses"),
    ("unaccounted", "unaccounted", None),
    ("latency p50 ms", "p50", "p50"),
    ("latency p95 ms", "p95", "p95"),
    ("latency p99 ms", "p99", "p99"),
    ("latency samples", "count", "count"),
)
CONSUMER_ROLE = {"prodcons": "worker", "pubsub": "subscriber"}

Figures = dict[str, dict[str, Any]]  # mode -> key -> value
# No proxy from the environment: the load generator reaches the host directly, and so do we.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_overview(base_url: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """``GET {base_url}/api/stats``; raises OSError or ValueError unless it is redis-bus's."""
    url = base_url.rstrip("/") + "/api/stats"
    with _DIRECT.open(url, timeout=timeout_s) as resp:
        body = json.loads(resp.read())
    if not (
        isinstance(body, dict)
        and isinstance(body.get("processes"), list)
        and isinstance(body.get("queues"), dict)
    ):
        raise ValueError(f"{url} did not answer redis-bus's /api/stats JSON")
    return body


class _Track:
    """One process's counters: values at first sight, last seen, and earlier incarnations."""

    def __init__(self, started_ms: Any, base: dict[str, int]) -> None:
        self.started_ms = started_ms
        self.base = base
        self.last = dict(base)
        self.carried = dict.fromkeys(FIELDS, 0)

    def see(self, started_ms: Any, values: dict[str, int]) -> None:
        if started_ms != self.started_ms:  # restarted under the same id: counters began at 0
            for f in FIELDS:
                self.carried[f] += self.last[f] - self.base[f]
            self.base = dict.fromkeys(FIELDS, 0)
            self.started_ms = started_ms
        self.last = values

    def delta(self, field: str) -> int:
        return self.carried[field] + self.last[field] - self.base[field]


class Deltas:
    """Figures of the bus since a starting overview (None: count from the first update)."""

    def __init__(self, start: Mapping[str, Any] | None = None) -> None:
        self._tracks: dict[str, tuple[str, _Track]] = {}  # "role:id" -> (role, track)
        self._levels0: dict[str, int] | None = None
        self._levels = {"depth": 0, "in_flight": 0}
        if start is not None:
            self._observe(start, born_during_test=False)

    def update(self, overview: Mapping[str, Any]) -> Figures:
        """Fold in a newer overview and return the figures since the start."""
        self._observe(overview, born_during_test=self._levels0 is not None)
        return self.figures()

    def _observe(self, overview: Mapping[str, Any], born_during_test: bool) -> None:
        for p in overview.get("processes", []):
            key, role = f"{p.get('role')}:{p.get('id')}", str(p.get("role"))
            values = {f: _int(p.get(f)) for f in FIELDS}
            if key in self._tracks:
                self._tracks[key][1].see(p.get("started_ms"), values)
            else:  # a process that appeared during the test: all its counts are the test's
                base = dict.fromkeys(FIELDS, 0) if born_during_test else values
                self._tracks[key] = (role, _Track(p.get("started_ms"), base))
                self._tracks[key][1].see(p.get("started_ms"), values)
        queues = overview.get("queues", {}).values()
        self._levels = {
            "depth": sum(_int(q.get("depth")) for q in queues),
            "in_flight": sum(_int(q.get("in_flight")) for q in queues),
        }
        if self._levels0 is None:
            self._levels0 = dict(self._levels)

    def _sum(self, field: str, role: str | None = None) -> int:
        return sum(t.delta(field) for r, t in self._tracks.values() if role in (None, r))

    def figures(self) -> Figures:
        """``{"prodcons": {...}, "pubsub": {...}}`` with the keys of PRODCONS/PUBSUB/LATENCY."""
        worker, levels0 = "worker", self._levels0 or self._levels
        prodcons: dict[str, Any] = {
            "pushed": self._sum("pushed"),
            "handled": self._sum("handled", worker),
            "dead_lettered": self._sum("dead_lettered", worker),
            "retried": self._sum("retried", worker),
            "reconnects": self._sum("reconnects", worker),
            **self._levels,
        }
        prodcons["unaccounted"] = (
            prodcons["pushed"] - prodcons["handled"] - prodcons["dead_lettered"]
            - (self._levels["depth"] - levels0["depth"])
            - (self._levels["in_flight"] - levels0["in_flight"])
        )  # fmt: skip
        sub = CONSUMER_ROLE["pubsub"]
        pubsub: dict[str, Any] = {
            "published": self._sum("published"),
            "published_zero": self._sum("published_zero"),
            **{k: self._sum(k, sub) for k in ("received", "lost", "duplicates", "reconnects")},
            "deadline_misses": self._sum("deadline_misses", sub),
        }
        figures = {"prodcons": prodcons, "pubsub": pubsub}
        for mode, role in CONSUMER_ROLE.items():
            figures[mode].update(percentiles([self._sum(f, role) for f in LAT_FIELDS]))
        return figures


def percentiles(counts: list[int]) -> dict[str, Any]:
    """p50/p95/p99 (a bucket's upper bound in ms, "inf" past the last) and the count."""
    result = histogram_percentiles(counts)
    if result["count"]:
        result.update({k: "inf" for k, v in result.items() if v is None})
    return result


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def format_line(mode: str, figures: Figures) -> str:
    """One compact line for the log: ``bus prodcons: pushed 120, handled 120, ...``."""
    f = figures[mode]
    labels = PRODCONS if mode == "prodcons" else PUBSUB
    parts = ", ".join(f"{label} {f[key]}" for key, label in labels)
    lat = "/".join(str(f[k] if f[k] is not None else "-") for k in ("p50", "p95", "p99"))
    return f"bus {mode}: {parts}; latency p50/p95/p99 {lat} ms (n={f['count']})"


def format_block(figures: Figures, source: str) -> str:
    """The summary printed when locust quits, one line per mode under a header."""
    head = f"redis-bus figures since the test started (deltas of {source}):"
    return "\n".join([head, *(" " + format_line(m, figures) for m in ("prodcons", "pubsub"))])


def table_rows(figures: Figures | None, note: str) -> list[dict[str, Any]]:
    """Rows ``{"figure", "prodcons", "pubsub"}`` for the web UI's table, a note row first."""
    rows: list[dict[str, Any]] = [{"figure": note, "prodcons": "", "pubsub": ""}]
    if figures is None:
        return rows
    for label, pkey, skey in TABLE:
        rows.append({
            "figure": label,
            "prodcons": figures["prodcons"][pkey] if pkey else "",
            "pubsub": figures["pubsub"][skey] if skey else "",
        })  # fmt: skip
    return rows
