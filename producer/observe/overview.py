"""Read the whole bus in a few round trips: queues, workers, subscribers, producers, counters.

This is the data behind ``GET /api/stats``, the dashboard, ``GET /metrics`` and
``python -m consumers status``; docs/watching.md gives its schema. It only reads.
Who is alive, deaf or dead is judged in :mod:`producer.observe.liveness`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from producer.observe.inhand import FIELDS as IN_HAND_FIELDS
from producer.observe.inhand import queue_sums
from producer.observe.liveness import producer_rows, subscriber_rows, worker_rows
from producer.observe.stats import COUNTERS, LAT_FIELDS, LATENCY_BUCKETS_MS, RATES
from producer.observe.totals import (
    RATE_WINDOW_MS,
    parse_sample,
    parse_totals,
    recent_rates,
    sum_counters,
)
from producer.settings import Settings
from producer.store import keys, scripts
from producer.store.counts import read_balance
from producer.store.envelope import EnvelopeError, decode, now_ms

_INT_FIELDS = frozenset(
    (*COUNTERS, *LAT_FIELDS, "lat_count", "lat_sum_ms", "pid", "started_ms", "updated_ms",
     "interval_ms", "deaf_since_ms", "deaf_after_ms", "stopped_ms", "heartbeat_ttl_ms",
     *IN_HAND_FIELDS)
)  # fmt: skip
_FLOAT_FIELDS = frozenset(f"{c}_per_s" for c in RATES)


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
    workers = worker_rows(processes, queues, settings, now)
    for q, queue in queues.items():
        mine = [w for w in workers if w["queue"] == q]
        queue["workers_alive"] = sum(1 for w in mine if w["state"] == "alive")
        queue["handled_per_s"] = round(sum(w["handled_per_s"] for w in mine), 2)
        queue.update(queue_sums(mine))
        queue.update(_sums(counters, "queue", q, ("pushed", "scheduled", "refused_full")))
        queue.update(_sums(counters, "queue", q, ("handled", "failed", "retried",
                                                  "dead_lettered", "recovered",
                                                  "timed_out")))  # fmt: skip
    channels = _read_channels(client, channel_names, settings.sharded_pubsub)
    for ch, channel in channels.items():
        channel.update(_sums(counters, "channel", ch, ("published", "published_zero", "received",
                                                      "lost", "duplicates")))  # fmt: skip
    return {
        "now_ms": now,
        "redis_ms": redis_now,
        "queues": queues,
        "channels": channels,
        "workers": workers,
        "subscribers": subscriber_rows(processes, now),
        "producers": producer_rows(processes),
        "processes": processes,
        "totals": _totals(processes),
        "counters": counters,
        "rates": recent_rates([parse_sample(x) for x in recent]),
        "latency_ms": {
            "prodcons": _percentiles([p for p in processes if p["role"] == "worker"]),
            "pubsub": _percentiles([p for p in processes if p["role"] == "subscriber"]),
        },
    }


def _sums(
    counters: list[dict[str, Any]], label: str, value: str, names: Iterable[str]
) -> dict[str, int]:
    return {f"{n}_total": sum_counters(counters, n, **{label: value}) for n in names}


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
        scripts.LEVELS(pipe, (keys.pending(q),), ())  # each priority level's count
        pipe.llen(keys.dead(q))
        pipe.zrange(keys.consumers(q), 0, -1, withscores=True)
        pipe.lindex(keys.pending(q), -1)  # the oldest message: the next to be claimed
        pipe.zcard(keys.delayed(q))
        pipe.zrange(keys.delayed(q), 0, 0, withscores=True)
        pipe.hgetall(keys.schedules(q))
        pipe.zcard(keys.waiting(q))
    replies = pipe.execute()
    queues: dict[str, Any] = {}
    ttl_ms = settings.heartbeat_ttl_s * 1000
    for i, q in enumerate(names):
        levels, dead, members, oldest, scheduled, first_due, fired, waiting = replies[
            8 * i : 8 * i + 8
        ]
        by_level = {str(int(p)): int(n) for p, n in zip(levels[::2], levels[1::2], strict=True)}
        consumers = [
            {
                "name": m.decode(),
                "heartbeat_age_ms": redis_now - int(score),
                "alive": redis_now - score <= ttl_ms,
            }
            for m, score in members
        ]
        queues[q] = {
            "depth": sum(by_level.values()),
            "priorities": by_level,
            "dead": dead,
            "consumers": consumers,
            "in_flight": 0,
            "oldest_age_ms": _age_of(oldest, now),
            "scheduled": scheduled,
            "next_due_in_ms": int(first_due[0][1]) - redis_now if first_due else None,
            "schedules": schedules_of(fired),
            "waiting": waiting,
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
        queues[q]["balance"] = read_balance(client, q)  # one step: the lists as counted
    return queues


def schedules_of(fields: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    """A queue's periodic schedules as its schedulers wrote them (``bus:{q}:schedules``):
    ``{name: {"spec", "next_ms", "last_tick_ms"}}`` (``last_tick_ms``: the latest tick sent or
    passed over; None: none yet)."""
    out: dict[str, dict[str, Any]] = {}
    for field, value in fields.items():
        name, _, what = field.decode().partition(":")
        row = out.setdefault(name, {"spec": "", "next_ms": None, "last_tick_ms": None})
        if what == "spec":
            row["spec"] = value.decode()
        elif what == "next":
            row["next_ms"] = int(value)
        elif not what:
            row["last_tick_ms"] = int(value)
    return dict(sorted(out.items()))


def _age_of(raw: bytes | None, now: int) -> int | None:
    """How long ago the producer stamped the message (None: no message, or no stamp)."""
    if raw is None:
        return None
    try:
        ts = decode(raw).ts
    except EnvelopeError:
        return None
    return max(0, now - ts) if ts else None


def _read_channels(client: redis.Redis, names: list[str], sharded: bool) -> dict[str, Any]:
    redis_names = [keys.channel(c) for c in names]
    counts: dict[Any, int] = {}
    if sharded and redis_names:  # each channel's subscribers are on its slot's node
        pipe = client.pipeline(transaction=False)
        for name in redis_names:
            pipe.pubsub_shardnumsub(name)
        for reply in pipe.execute():
            counts.update(reply)
    elif redis_names:
        counts = dict(client.pubsub_numsub(*redis_names))
    return {c: {"subscribers": int(counts.get(keys.channel(c).encode(), 0))} for c in names}


def _totals(processes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for p in processes:
        role = totals.setdefault(p.get("role", "?"), dict.fromkeys(COUNTERS, 0))
        for c in COUNTERS:
            role[c] += int(p.get(c, 0))
    return totals


def _percentiles(processes: list[dict[str, Any]]) -> dict[str, Any]:
    return percentiles([sum(int(p.get(f, 0)) for p in processes) for f in LAT_FIELDS])


def percentiles(counts: list[int]) -> dict[str, Any]:
    """p50/p95/p99 of a latency histogram (counts per bucket of ``LAT_FIELDS``), each the upper
    bound in ms of the bucket holding it (None past the last), and the count."""
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
