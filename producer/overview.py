"""Read the whole bus in a few round trips: queues, workers, subscribers, producers, counters.

This is the data behind ``GET /api/stats``, the dashboard, ``GET /metrics`` and
``python -m consumers status``; the README gives its schema. It only reads.

Liveness, judged here once for every reader:

- a worker is ``alive`` while its heartbeat (``bus:{q}:consumers``, Redis's clock) is younger
  than its ``BUS_HEARTBEAT_TTL_S`` (the one it wrote in its stats; the reader's own setting for
  a worker whose stats are gone); ``stopped`` when it said goodbye; else ``dead``;
- a subscriber is ``listening``, ``deaf`` (it knows its link is down, since
  ``deaf_since_ms``), ``silent`` (its stats stopped coming: frozen, killed, or cut off) or
  ``stopped``. It is deaf past its deadline when deaf or silent for longer than
  ``deaf_after_ms``, the time its own settings allow a dead link to go unnoticed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import redis

from producer import keys
from producer.envelope import EnvelopeError, decode, now_ms
from producer.settings import Settings
from producer.stats import COUNTERS, HISTORY_SERIES, LAT_FIELDS, LATENCY_BUCKETS_MS, RATES

_INT_FIELDS = frozenset(
    (*COUNTERS, *LAT_FIELDS, "lat_count", "lat_sum_ms", "pid", "started_ms", "updated_ms",
     "interval_ms", "deaf_since_ms", "deaf_after_ms", "stopped_ms", "heartbeat_ttl_ms")
)  # fmt: skip
_FLOAT_FIELDS = frozenset(f"{c}_per_s" for c in RATES)
PRODUCER_ROLES = ("web", "locust")
RATE_WINDOW_MS = 5000  # /api/stats "rates": over the history's last five seconds or so
GAP_MS = 3000  # history samples further apart than this: the chart breaks its line


def read_overview(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """A JSON-ready picture of the bus as the settings' queues and channels see it (and any
    other queue a live worker serves). Heartbeat ages are on Redis's clock, as the heartbeats
    are; a process's ``age_ms`` compares the stamp it wrote with its own clock to this host's."""
    now = now_ms()
    seconds, micros = client.time()
    redis_now = seconds * 1000 + micros // 1000
    processes = _read_processes(client, settings, now)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.STATS_TOTALS)
    pipe.lrange(keys.STATS_HISTORY, -(RATE_WINDOW_MS // 1000 + 2), -1)
    raw_totals, recent = pipe.execute()
    counters = parse_totals(raw_totals)
    queue_names = list(settings.queues)
    for p in processes:
        q = p.get("queue")
        if p.get("role") == "worker" and q and q not in queue_names:
            queue_names.append(q)
    queues = _read_queues(client, settings, queue_names, redis_now, now)
    channel_names = list(settings.channels)
    for counter in counters:
        name = counter["labels"].get("channel")
        if name and name not in channel_names and counter["counter"] == "published":
            channel_names.append(name)
    workers = _workers(processes, queues, settings, now)
    for q, queue in queues.items():
        mine = [w for w in workers if w["queue"] == q]
        queue["workers_alive"] = sum(1 for w in mine if w["state"] == "alive")
        queue["handled_per_s"] = round(sum(w["handled_per_s"] for w in mine), 2)
        queue.update(_sums(counters, "queue", q, ("pushed", "scheduled", "refused_full")))
        queue.update(_sums(counters, "queue", q, ("handled", "failed", "retried",
                                                  "dead_lettered", "recovered")))  # fmt: skip
    channels = _read_channels(client, channel_names)
    for ch, channel in channels.items():
        channel.update(_sums(counters, "channel", ch, ("published", "published_zero", "received",
                                                      "lost", "duplicates")))  # fmt: skip
    return {
        "now_ms": now,
        "redis_ms": redis_now,
        "queues": queues,
        "channels": channels,
        "workers": workers,
        "subscribers": _subscribers(processes, now),
        "producers": [_producer(p) for p in processes if p.get("role") in PRODUCER_ROLES],
        "processes": processes,
        "totals": _totals(processes),
        "counters": counters,
        "rates": _recent_rates([_sample(x) for x in recent]),
        "latency_ms": {
            "prodcons": _percentiles([p for p in processes if p["role"] == "worker"]),
            "pubsub": _percentiles([p for p in processes if p["role"] == "subscriber"]),
        },
    }


def read_history(client: redis.Redis) -> dict[str, Any]:
    """The bus-wide rates (messages per second) between consecutive samples of
    ``bus:stats:history``, oldest first: ``{"series", "points": [{"t", <series>...}]}``.
    A point further than :data:`GAP_MS` from the one before starts a new line (``"gap"``)."""
    raw: list[bytes] = client.lrange(keys.STATS_HISTORY, 0, -1)  # type: ignore[assignment]
    samples = [_sample(x) for x in raw]
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
    """``bus:stats:totals`` as ``[{"counter", "labels", "value"}]``, sorted."""
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


def _sums(
    counters: list[dict[str, Any]], label: str, value: str, names: Iterable[str]
) -> dict[str, int]:
    return {f"{n}_total": sum_counters(counters, n, **{label: value}) for n in names}


def _sample(raw: bytes) -> dict[str, int]:
    try:
        data = json.loads(raw)
        return {k: int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {"t": 0}


def _recent_rates(samples: list[dict[str, int]]) -> dict[str, float | None]:
    """Per second between the newest sample and the oldest of the last few seconds."""
    samples = [s for s in samples if s.get("t")]
    if len(samples) < 2 or samples[-1]["t"] <= samples[0]["t"]:
        return dict.fromkeys(HISTORY_SERIES)
    first, last = samples[0], samples[-1]
    dt = last["t"] - first["t"]
    return {
        n: round(max(0, last.get(n, 0) - first.get(n, 0)) * 1000 / dt, 2) for n in HISTORY_SERIES
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
            if field in _INT_FIELDS and value.lstrip("-").isdigit():
                row[field] = int(value)
            elif field in _FLOAT_FIELDS:
                row[field] = _float(value)
            else:
                row[field] = value
        row["age_ms"] = now - int(row.get("updated_ms", now))
        out.append(row)
    out.sort(key=lambda r: (r.get("role", ""), r.get("id", "")))
    return out


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _read_queues(
    client: redis.Redis, settings: Settings, names: list[str], redis_now: int, now: int
) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    for q in names:
        pipe.llen(keys.pending(q))
        pipe.llen(keys.dead(q))
        pipe.zrange(keys.consumers(q), 0, -1, withscores=True)
        pipe.lindex(keys.pending(q), -1)  # the oldest message: the next to be claimed
        pipe.zcard(keys.delayed(q))
        pipe.zrange(keys.delayed(q), 0, 0, withscores=True)
    replies = pipe.execute()
    queues: dict[str, Any] = {}
    ttl_ms = settings.heartbeat_ttl_s * 1000
    for i, q in enumerate(names):
        depth, dead, members, oldest, scheduled, first_due = replies[6 * i : 6 * i + 6]
        consumers = [
            {
                "name": m.decode(),
                "heartbeat_age_ms": redis_now - int(score),
                "alive": redis_now - score <= ttl_ms,
            }
            for m, score in members
        ]
        queues[q] = {
            "depth": depth,
            "dead": dead,
            "consumers": consumers,
            "in_flight": 0,
            "oldest_age_ms": _age_of(oldest, now),
            "scheduled": scheduled,
            "next_due_in_ms": int(first_due[0][1]) - redis_now if first_due else None,
        }
    pipe = client.pipeline(transaction=False)
    for q in names:
        for c in queues[q]["consumers"]:
            pipe.llen(keys.processing(q, c["name"]))
    lengths = iter(pipe.execute())
    for q in names:
        for c in queues[q]["consumers"]:
            c["in_flight"] = next(lengths)
            queues[q]["in_flight"] += c["in_flight"]
    return queues


def _age_of(raw: bytes | None, now: int) -> int | None:
    """How long ago the producer stamped the message (None: no message, or no stamp)."""
    if raw is None:
        return None
    try:
        ts = decode(raw).ts
    except EnvelopeError:
        return None
    return max(0, now - ts) if ts else None


def _read_channels(client: redis.Redis, names: list[str]) -> dict[str, Any]:
    redis_names = [keys.channel(c) for c in names]
    counts = dict(client.pubsub_numsub(*redis_names)) if redis_names else {}
    return {c: {"subscribers": int(counts.get(keys.channel(c).encode(), 0))} for c in names}


def _workers(
    processes: list[dict[str, Any]], queues: dict[str, Any], settings: Settings, now: int
) -> list[dict[str, Any]]:
    """One row per worker a heartbeat or a stats hash knows of."""
    beats = {(q, c["name"]): c for q, v in queues.items() for c in v["consumers"]}
    stats = {
        (p.get("queue", ""), p.get("name", "")): p for p in processes if p.get("role") == "worker"
    }
    rows = []
    for q, name in sorted(set(beats) | set(stats)):
        beat, p = beats.get((q, name)), stats.get((q, name), {})
        # The worker's own TTL when it said it (the reaper of its fleet uses that one).
        ttl_ms = int(p.get("heartbeat_ttl_ms") or settings.heartbeat_ttl_s * 1000)
        if beat is not None:
            beat["alive"] = beat["heartbeat_age_ms"] <= ttl_ms
        if beat is not None and beat["alive"]:
            state = "alive"
        elif p.get("stopped_ms") and beat is None:
            state = "stopped"
        else:
            state = "dead"
        rows.append(
            {
                "queue": q,
                "name": name,
                "delivery": p.get("delivery"),
                "state": state,
                "alive": state == "alive",
                "heartbeat_age_ms": beat["heartbeat_age_ms"] if beat else None,
                "heartbeat_ttl_ms": ttl_ms,
                "in_flight": beat["in_flight"] if beat else 0,
                "handled_per_s": p.get("handled_per_s", 0.0) if state == "alive" else 0.0,
                "stats_age_ms": p.get("age_ms"),
                "pid": p.get("pid"),
                "host": p.get("host"),
                **{
                    c: p.get(c, 0)
                    for c in (
                        "handled",
                        "failed",
                        "retried",
                        "dead_lettered",
                        "recovered",
                        "reconnects",
                    )
                },
            }
        )
    return rows


def _subscribers(processes: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
    rows = []
    for p in processes:
        if p.get("role") != "subscriber":
            continue
        interval = int(p.get("interval_ms") or 500)
        deaf_after = int(p.get("deaf_after_ms") or 0)
        deaf_since = int(p.get("deaf_since_ms") or 0)
        if p.get("stopped_ms"):
            state, deaf_for = "stopped", 0
        elif p["age_ms"] > 3 * interval + 1000:  # its stats stopped coming
            state, deaf_for = "silent", p["age_ms"]
        elif deaf_since:
            state, deaf_for = "deaf", max(0, now - deaf_since)
        else:
            state, deaf_for = "listening", 0
        rows.append(
            {
                "name": p.get("name", p.get("id")),
                "channels": [c for c in p.get("channels", "").split(",") if c],
                "patterns": [c for c in p.get("patterns", "").split(",") if c],
                "state": state,
                "deaf": state in ("deaf", "silent"),
                "deaf_for_ms": deaf_for,
                "deaf_after_ms": deaf_after,
                "overdue": state in ("deaf", "silent") and deaf_for > deaf_after,
                "received_per_s": p.get("received_per_s", 0.0) if state == "listening" else 0.0,
                "stats_age_ms": p["age_ms"],
                "pid": p.get("pid"),
                "host": p.get("host"),
                **{
                    c: p.get(c, 0)
                    for c in (
                        "received",
                        "handled",
                        "lost",
                        "duplicates",
                        "out_of_order",
                        "failed",
                        "reconnects",
                        "deadline_misses",
                    )
                },
            }
        )
    return rows


def _producer(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": p.get("role"),
        "name": p.get("name", p.get("id")),
        "stats_age_ms": p["age_ms"],
        **{
            c: p.get(c, 0)
            for c in (
                "pushed",
                "published",
                "published_zero",
                "unconfirmed",
                "refused_full",
                "rejected",
                "unavailable",
            )
        },
        "pushed_per_s": p.get("pushed_per_s", 0.0),
        "published_per_s": p.get("published_per_s", 0.0),
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
