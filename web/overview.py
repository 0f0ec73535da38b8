"""Read the whole bus in a few round trips: queue depths, workers, subscribers, counters.

This is the data behind ``GET /api/stats`` (and the dashboard); see the README for its schema.
"""

from __future__ import annotations

from typing import Any

import redis

from producer import keys
from producer.envelope import now_ms
from producer.settings import Settings
from producer.stats import COUNTERS, LAT_FIELDS, LATENCY_BUCKETS_MS

_INT_FIELDS = frozenset(
    (*COUNTERS, *LAT_FIELDS, "lat_count", "lat_sum_ms", "pid", "started_ms", "updated_ms")
)


def read_overview(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """A JSON-ready picture of the bus as the settings' queues and channels see it. Heartbeat
    ages are on Redis's clock, as the heartbeats are; a process's ``age_ms`` compares the
    stamp it wrote with its own clock to this host's."""
    now = now_ms()
    seconds, micros = client.time()
    redis_now = seconds * 1000 + micros // 1000
    processes = _read_processes(client, settings, now)
    return {
        "now_ms": now,
        "queues": _read_queues(client, settings, redis_now),
        "channels": _read_channels(client, settings),
        "processes": processes,
        "totals": _totals(processes),
        "latency_ms": {
            "prodcons": _percentiles([p for p in processes if p["role"] == "worker"]),
            "pubsub": _percentiles([p for p in processes if p["role"] == "subscriber"]),
        },
    }


def _read_processes(client: redis.Redis, settings: Settings, now: int) -> list[dict[str, Any]]:
    # Read only: entries past the horizon are skipped here and pruned by the writers' flush.
    horizon = now - int(settings.stats_ttl_s * 1000)
    names: list[bytes] = client.zrangebyscore(keys.STATS_INDEX, horizon, "+inf")  # type: ignore[assignment]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    out = []
    for raw in pipe.execute():
        if not raw:
            continue
        row: dict[str, Any] = {}
        for k, v in raw.items():
            field, value = k.decode(), v.decode()
            row[field] = (
                int(value) if field in _INT_FIELDS and value.lstrip("-").isdigit() else value
            )
        row["age_ms"] = now - int(row.get("updated_ms", now))
        out.append(row)
    out.sort(key=lambda r: (r.get("role", ""), r.get("id", "")))
    return out


def _read_queues(client: redis.Redis, settings: Settings, now: int) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    for q in settings.queues:
        pipe.llen(keys.pending(q))
        pipe.llen(keys.dead(q))
        pipe.zrange(keys.consumers(q), 0, -1, withscores=True)
    replies = pipe.execute()
    queues: dict[str, Any] = {}
    ttl_ms = settings.heartbeat_ttl_s * 1000
    for i, q in enumerate(settings.queues):
        depth, dead, members = replies[3 * i : 3 * i + 3]
        consumers = [
            {
                "name": m.decode(),
                "heartbeat_age_ms": now - int(score),
                "alive": now - score <= ttl_ms,
            }
            for m, score in members
        ]
        queues[q] = {"depth": depth, "dead": dead, "consumers": consumers, "in_flight": 0}
    pipe = client.pipeline(transaction=False)
    for q in settings.queues:
        for c in queues[q]["consumers"]:
            pipe.llen(keys.processing(q, c["name"]))
    lengths = iter(pipe.execute())
    for q in settings.queues:
        for c in queues[q]["consumers"]:
            c["in_flight"] = next(lengths)
            queues[q]["in_flight"] += c["in_flight"]
    return queues


def _read_channels(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    names = [keys.channel(c) for c in settings.channels]
    counts = dict(client.pubsub_numsub(*names)) if names else {}
    return {
        c: {"subscribers": int(counts.get(keys.channel(c).encode(), 0))} for c in settings.channels
    }


def _totals(processes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for p in processes:
        role = totals.setdefault(p.get("role", "?"), dict.fromkeys(COUNTERS, 0))
        for c in COUNTERS:
            role[c] += int(p.get(c, 0))
    return totals


def _percentiles(processes: list[dict[str, Any]]) -> dict[str, Any]:
    counts = [sum(int(p.get(f, 0)) for p in processes) for f in LAT_FIELDS]
    total = sum(counts)
    result: dict[str, Any] = {"count": total}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        result[name] = _bucket_bound(counts, q * total) if total else None
    return result


def _bucket_bound(counts: list[int], rank: float) -> float | None:
    """Upper bound (ms) of the bucket holding the ``rank``-th observation; None past the last."""
    seen = 0
    for bound, n in zip((*LATENCY_BUCKETS_MS, None), counts, strict=True):
        seen += n
        if seen >= rank:
            return bound
    return None
