"""``GET /metrics``: the whole bus in Prometheus's text format, from the same overview as
``/api/stats`` (so one scrape of any gunicorn worker sees every process, and both agree).

Counters come from ``bus:{stats}:totals``: bus-wide sums that outlive the processes and never go
down, so ``rate()`` is right across crashes and restarts. Gauges come from Redis itself (queue
depths, heartbeats, subscriber counts) and from what live workers report of their handlers
(:mod:`producer.observe.inhand`). The table below is the whole list; docs/watching.md repeats
it, and ``deploy/`` holds a Prometheus scrape snippet and a Grafana dashboard that use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from producer.observe.stats import LATENCY_BUCKETS_MS
from producer.store.counts import FIELDS as COUNTED

ANY = None  # every role
# (counter in bus:{stats}:totals, roles it is taken from, metric (without _total), help, labels)
COUNTERS: tuple[tuple[str, tuple[str, ...] | None, str, str, tuple[str, ...]], ...] = (
    ("pushed", ANY, "bus_messages_pushed", "Messages LPUSHed onto a queue", ("queue",)),
    ("scheduled", ANY, "bus_messages_scheduled", "Messages pushed with a delay", ("queue",)),
    ("refused_full", ANY, "bus_messages_refused", "Messages refused: queue at its depth limit",
     ("queue",)),
    ("published", ANY, "bus_messages_published", "Messages PUBLISHed on a channel", ("channel",)),
    ("published_zero", ANY, "bus_publish_no_receivers",
     "PUBLISHes that no subscriber received (the message went nowhere)", ("channel",)),
    ("unconfirmed", ANY, "bus_sends_unconfirmed",
     "Sends whose reply was lost: they may or may not have happened", ("role",)),
    ("rejected", ("web",), "bus_http_rejected", "HTTP requests answered 4xx", ()),
    ("unavailable", ("web",), "bus_http_unavailable", "HTTP requests answered 503", ()),
    ("handled", ("worker",), "bus_messages_handled", "Queue messages whose handler returned",
     ("queue", "delivery")),
    ("failed", ("worker",), "bus_messages_failed", "Queue messages whose handler raised",
     ("queue",)),
    ("retried", ("worker",), "bus_messages_retried", "Queue messages requeued for another attempt",
     ("queue",)),
    ("timed_out", ("worker",), "bus_messages_timed_out",
     "Queue messages whose handler passed its time limit (the attempt failed)", ("queue",)),
    ("recovered", ("worker",), "bus_messages_recovered",
     "In-flight messages a worker requeued after a restart or reconnect", ("queue",)),
    ("dead_lettered", ANY, "bus_dead_letters", "Messages dead-lettered (garbage, or out of "
     "attempts, or a failed pub/sub handler)", ("role",)),
    ("dead_dropped", ("worker",), "bus_dead_letters_dropped",
     "Dead letters trimmed by BUS_DEAD_MAX", ("queue",)),
    ("received", ("subscriber",), "bus_pubsub_received", "Pub/sub messages received",
     ("channel",)),
    ("handled", ("subscriber",), "bus_pubsub_handled", "Pub/sub messages whose handler returned",
     ()),
    ("lost", ("subscriber",), "bus_pubsub_lost",
     "Pub/sub messages published but never received (sequence gaps)", ("channel",)),
    ("duplicates", ("subscriber",), "bus_pubsub_duplicates",
     "Pub/sub messages received twice", ("channel",)),
    ("out_of_order", ("subscriber",), "bus_pubsub_out_of_order",
     "Pub/sub messages older than the newest seen from their producer", ("channel",)),
    ("pings", ("subscriber",), "bus_pubsub_pings", "Health-check PINGs sent by subscribers", ()),
    ("deadline_misses", ("subscriber",), "bus_pubsub_deadline_misses",
     "Links dropped because no PONG came in time", ()),
    ("reconnects", ANY, "bus_reconnects", "Connections re-established after an error",
     ("role",)),
)  # fmt: skip
# (field of a live worker's row, divisor, gauge, help): absent for a worker that does not say.
IN_HAND: tuple[tuple[str, int, str, str], ...] = (
    ("busy", 1, "bus_worker_busy", "Messages in the worker's handlers' hands now"),
    ("slots", 1, "bus_worker_slots", "Handlers the worker may run at once (its concurrency)"),
    ("oldest_age_ms", 1000, "bus_worker_oldest_in_hand_age_seconds",
     "How long the oldest message in the worker's handlers' hands has been there (0: none)"),
    ("oldest_limit_ms", 1000, "bus_worker_oldest_in_hand_limit_seconds",
     "That message's time limit (0: none in hand)"),
    ("abandoned", 1, "bus_worker_abandoned_handlers",
     "Handlers given up on at their time limit that still run"),
)  # fmt: skip


def render(overview: dict[str, Any]) -> bytes:
    """The exposition text of ``overview`` (as
    :func:`producer.observe.overview.read_overview` gives)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(overview))
    return generate_latest(registry)


class _Snapshot(Collector):
    def __init__(self, overview: dict[str, Any]) -> None:
        self.overview = overview

    def collect(self) -> Iterator[Metric]:
        yield from _counters(self.overview)
        yield _latency(self.overview["counters"])
        yield from _gauges(self.overview)
        yield from _in_hand(self.overview["workers"])


def _known(overview: dict[str, Any], labels: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The label values a counter shows as 0 before its first event, so that ``rate()`` and
    ``increase()`` see that event too: every queue, channel, role and worker's delivery."""
    if labels == ("queue",):
        return {(q,) for q in overview["queues"]}
    if labels == ("channel",):
        return {(c,) for c in overview["channels"]}
    if labels == ("role",):
        return {(p.get("role", "?"),) for p in overview["processes"]}
    if labels == ("queue", "delivery"):
        return {(w["queue"], w["delivery"]) for w in overview["workers"] if w["delivery"]}
    return {()} if not labels else set()


def _counters(overview: dict[str, Any]) -> Iterator[Metric]:
    counters = overview["counters"]
    for counter, roles, name, doc, labels in COUNTERS:
        sums: dict[tuple[str, ...], int] = dict.fromkeys(_known(overview, labels), 0)
        for c in counters:
            if c["counter"] != counter or (roles and c["labels"].get("role") not in roles):
                continue
            key = tuple(c["labels"].get(label, "") for label in labels)
            sums[key] = sums.get(key, 0) + c["value"]
        family = CounterMetricFamily(name, doc, labels=labels)
        for key, value in sorted(sums.items()):
            family.add_metric(list(key), value)
        yield family


def _latency(counters: list[dict[str, Any]]) -> Metric:
    family = HistogramMetricFamily(
        "bus_delivery_latency_seconds",
        "End to end: from the producer's stamp to the handler's start",
        labels=("mode",),
    )
    by_mode: dict[str, dict[str, int]] = {}
    for c in counters:
        mode = c["labels"].get("mode")
        if mode and c["counter"].startswith("lat_"):
            by_mode.setdefault(mode, {})[c["counter"]] = c["value"]
    for mode in ("prodcons", "pubsub"):
        fields = by_mode.get(mode, {})
        buckets, seen = [], 0
        for bound in LATENCY_BUCKETS_MS:
            seen += fields.get(f"lat_le_{bound}", 0)
            buckets.append((f"{bound / 1000:g}", seen))
        buckets.append(("+Inf", fields.get("lat_count", 0)))
        family.add_metric([mode], buckets, fields.get("lat_sum_ms", 0) / 1000)
    return family


def _gauges(overview: dict[str, Any]) -> Iterator[Metric]:
    queues = overview["queues"]
    for key, name, doc in (
        ("depth", "bus_queue_depth", "Messages waiting in the queue"),
        ("scheduled", "bus_queue_scheduled", "Delayed messages not due yet (bus:{q}:delayed)"),
        ("waiting", "bus_queue_waiting", "Messages waiting for others (after): bus:{q}:waiting"),
        ("in_flight", "bus_queue_in_flight", "Messages claimed by workers, not yet settled"),
        ("dead", "bus_queue_dead_letters", "Dead letters kept for the queue"),
        ("workers_alive", "bus_queue_workers_alive", "Workers with a fresh heartbeat"),
    ):
        family = GaugeMetricFamily(name, doc, labels=("queue",))
        for q, v in queues.items():
            family.add_metric([q], v[key])
        yield family
    unaccounted = GaugeMetricFamily(
        "bus_queue_unaccounted",
        "Messages counted into the queue's lists minus those counted out minus those in them "
        "(0: every message accounted for; see producer/store/counts.py)",
        labels=("queue",),
    )
    moved = CounterMetricFamily(
        "bus_queue_moves",
        "Messages counted in (pushed, requeued) and out (acked, dead, taken) of the queue's "
        "lists by the scripts that move them",
        labels=("queue", "what"),
    )
    for q, v in queues.items():
        unaccounted.add_metric([q], v["balance"]["unaccounted"])
        for what in COUNTED:
            moved.add_metric([q, what], v["balance"][what])
    yield unaccounted
    yield moved
    oldest = GaugeMetricFamily(
        "bus_queue_oldest_age_seconds",
        "Age of the oldest waiting message (absent when the queue is empty)",
        labels=("queue",),
    )
    for q, v in queues.items():
        if v["oldest_age_ms"] is not None:
            oldest.add_metric([q], v["oldest_age_ms"] / 1000)
    yield oldest
    up = GaugeMetricFamily(
        "bus_worker_up",
        "1 while the worker's heartbeat is fresh, 0 once it is not (a worker that stopped "
        "cleanly is absent)",
        labels=("queue", "name"),
    )
    for w in overview["workers"]:
        if w["state"] != "stopped":
            up.add_metric([w["queue"], w["name"]], 1 if w["alive"] else 0)
    yield up
    listening = GaugeMetricFamily(
        "bus_subscriber_up",
        "1 while the subscriber is subscribed and reporting (one that stopped cleanly is absent)",
        labels=("name",),
    )
    for s in overview["subscribers"]:
        if s["state"] != "stopped":
            listening.add_metric([s["name"]], 1 if s["state"] == "listening" else 0)
    yield listening
    subs = GaugeMetricFamily(
        "bus_channel_subscribers", "Subscribers Redis counts on the channel", labels=("channel",)
    )
    for c, v in overview["channels"].items():
        subs.add_metric([c], v["subscribers"])
    yield subs
    procs = GaugeMetricFamily(
        "bus_processes", "Processes whose stats are live, by role", labels=("role",)
    )
    roles: dict[str, int] = {}
    for p in overview["processes"]:
        roles[p.get("role", "?")] = roles.get(p.get("role", "?"), 0) + 1
    for role, n in sorted(roles.items()):
        procs.add_metric([role], n)
    yield procs


def _in_hand(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    for key, divisor, name, doc in IN_HAND:
        family = GaugeMetricFamily(name, doc, labels=("queue", "name"))
        for w in workers:
            if key in w:
                family.add_metric([w["queue"], w["name"]], w[key] / divisor)
        yield family
