"""Writes redis-bus.json, the Grafana dashboard, beside this file.

Edit the panels here, then run ``.venv/bin/python deploy/grafana/build.py``; the test
``tests/test_deploy.py`` checks that the committed JSON is what this script writes and that
every metric it queries is one ``GET /metrics`` exposes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("redis-bus.json")
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
Q = '{queue=~"$queue"}'
CH = '{channel=~"$channel"}'
MSG_S = "suffix:msg/s"
PER_S = "suffix:/s"


def target(expr: str, legend: str, ref: str, instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
    }


def targets(queries: list[tuple[str, str]], instant: bool = False) -> list[dict[str, Any]]:
    return [
        target(expr, legend, chr(ord("A") + i), instant) for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str, description: str, unit: str, queries: list[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "spanNulls": False,
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets(queries),
    }


def stat(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    steps: list[tuple[float | None, str]],
    mappings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": "none",
                "decimals": 0,
                "mappings": mappings or [],
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": color, "value": value} for value, color in steps],
                },
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name",
        },
        "targets": targets(queries, instant=True),
    }


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    }
]

# (panel, width, height), laid out left to right, top to bottom on Grafana's 24 columns.
PANELS: list[tuple[dict[str, Any], int, int]] = [
    (
        stat(
            "Live workers per queue",
            "Workers whose heartbeat is fresh, per queue. 0: nothing consumes the queue.",
            [(f"bus_queue_workers_alive{Q}", "{{queue}}")],
            [(None, "red"), (1, "green")],
        ),
        6,
        4,
    ),
    (
        stat(
            "Workers",
            "Each worker a heartbeat or a stats hash knows of: up while its heartbeat is fresh. "
            "A cleanly stopped worker has no series.",
            [(f"bus_worker_up{Q}", "{{queue}} / {{name}}")],
            [(None, "red"), (1, "green")],
            UP_DOWN,
        ),
        6,
        4,
    ),
    (
        stat(
            "Subscribers",
            "Each subscriber: up while it is subscribed and its stats keep coming; down when "
            "deaf (link lost) or silent (frozen or killed); a cleanly stopped one has no series.",
            [("bus_subscriber_up", "{{name}}")],
            [(None, "red"), (1, "green")],
            UP_DOWN,
        ),
        6,
        4,
    ),
    (
        stat(
            "Subscribers per channel",
            "Subscribers Redis counts on each channel (PUBSUB NUMSUB). 0: a PUBLISH there "
            "reaches nobody.",
            [(f"bus_channel_subscribers{CH}", "{{channel}}")],
            [(None, "orange"), (1, "green")],
        ),
        6,
        4,
    ),
    (
        timeseries(
            "Messages/s",
            "Bus-wide rates over 1 minute: pushed onto and handled from each queue, published "
            "on each channel, received by subscribers (one count per subscriber that got it) "
            "and lost (published, never received: sequence gaps).",
            MSG_S,
            [
                (
                    f"sum by (queue) (rate(bus_messages_pushed_total{Q}[1m]))",
                    "pushed {{queue}}",
                ),
                (
                    f"sum by (queue) (rate(bus_messages_handled_total{Q}[1m]))",
                    "handled {{queue}}",
                ),
                (
                    f"sum by (channel) (rate(bus_messages_published_total{CH}[1m]))",
                    "published {{channel}}",
                ),
                (
                    f"sum by (channel) (rate(bus_pubsub_received_total{CH}[1m]))",
                    "received {{channel}}",
                ),
                (
                    f"sum by (channel) (rate(bus_pubsub_lost_total{CH}[1m]))",
                    "lost {{channel}}",
                ),
            ],
        ),
        24,
        8,
    ),
    (
        timeseries(
            "Queue depth and in flight",
            "Messages waiting in each queue, and messages claimed by workers but not yet "
            "settled (acked, retried or dead-lettered).",
            "short",
            [
                (f"bus_queue_depth{Q}", "waiting {{queue}}"),
                (f"bus_queue_in_flight{Q}", "in flight {{queue}}"),
            ],
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Oldest waiting message",
            "Age of the next message to be claimed, from its producer's stamp. No line while "
            "the queue is empty.",
            "s",
            [(f"bus_queue_oldest_age_seconds{Q}", "{{queue}}")],
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Delivery latency",
            "End to end, from the producer's stamp to the handler's start: p50, p95 and p99 "
            "over 1 minute, per mode (prodcons: queues, pubsub: channels).",
            "s",
            [
                (
                    f"histogram_quantile({q}, sum by (le, mode) "
                    "(rate(bus_delivery_latency_seconds_bucket[1m])))",
                    f"p{round(q * 100)} {{{{mode}}}}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Publishes to nobody/s",
            "PUBLISHes that no subscriber received: the message went nowhere.",
            MSG_S,
            [
                (
                    f"sum by (channel) (rate(bus_publish_no_receivers_total{CH}[1m]))",
                    "{{channel}}",
                )
            ],
        ),
        6,
        8,
    ),
    (
        timeseries(
            "Pub/sub lost/s",
            "Messages published while a subscriber was listening but never received by it "
            "(a reconnect, a cut-off slow subscriber), counted from sequence gaps.",
            MSG_S,
            [(f"sum by (channel) (rate(bus_pubsub_lost_total{CH}[1m]))", "{{channel}}")],
        ),
        6,
        8,
    ),
    (
        timeseries(
            "Dead letters kept",
            "Dead letters stored per queue, waiting for `python -m consumers dead requeue` "
            "or the dashboard's requeue button.",
            "short",
            [(f"bus_queue_dead_letters{Q}", "{{queue}}")],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Dead-lettered/s",
            "Messages dead-lettered, by role: workers (garbage, or out of attempts) and "
            "subscribers (a failed pub/sub handler).",
            MSG_S,
            [("sum by (role) (rate(bus_dead_letters_total[1m]))", "{{role}}")],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Handler failures/s",
            "Queue messages whose handler raised, and those requeued for another attempt.",
            MSG_S,
            [
                (
                    f"sum by (queue) (rate(bus_messages_failed_total{Q}[1m]))",
                    "failed {{queue}}",
                ),
                (
                    f"sum by (queue) (rate(bus_messages_retried_total{Q}[1m]))",
                    "retried {{queue}}",
                ),
            ],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Reconnects/s",
            "Connections re-established after an error, by role.",
            PER_S,
            [("sum by (role) (rate(bus_reconnects_total[1m]))", "{{role}}")],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Producer refusals and errors/s",
            "Pushes refused at the queue's depth limit (HTTP 429), sends whose reply was lost "
            "(they may or may not have happened), HTTP 4xx and 503 answers.",
            PER_S,
            [
                (
                    f"sum by (queue) (rate(bus_messages_refused_total{Q}[1m]))",
                    "refused {{queue}}",
                ),
                (
                    "sum by (role) (rate(bus_sends_unconfirmed_total[1m]))",
                    "unconfirmed {{role}}",
                ),
                ("sum(rate(bus_http_rejected_total[1m]))", "HTTP 4xx"),
                ("sum(rate(bus_http_unavailable_total[1m]))", "HTTP 503"),
            ],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Processes",
            "Processes whose stats are live, by role (web: one per gunicorn worker).",
            "short",
            [("bus_processes", "{{role}}")],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Handlers busy",
            "Messages in live workers' handlers' hands, and the handlers they may run at once "
            "(their concurrency), per queue. Busy at slots while the queue grows: too few.",
            "short",
            [
                (f"sum by (queue) (bus_worker_busy{Q})", "busy {{queue}}"),
                (f"sum by (queue) (bus_worker_slots{Q})", "slots {{queue}}"),
            ],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Oldest message in hand",
            "Per worker, how long the oldest message in its handlers' hands has been there "
            "(0: none), beside that message's time limit. Above its limit for long: stuck.",
            "s",
            [
                (f"bus_worker_oldest_in_hand_age_seconds{Q}", "{{queue}} / {{name}}"),
                (f"bus_worker_oldest_in_hand_limit_seconds{Q}", "limit {{queue}} / {{name}}"),
            ],
        ),
        8,
        8,
    ),
    (
        timeseries(
            "Stuck handlers",
            "Handlers a worker gave up on at their time limit that still run (abandoned), and "
            "handlers timing out per second, per queue.",
            "short",
            [
                (f"bus_worker_abandoned_handlers{Q}", "abandoned {{queue}} / {{name}}"),
                (
                    f"sum by (queue) (rate(bus_messages_timed_out_total{Q}[1m]))",
                    "timed out/s {{queue}}",
                ),
            ],
        ),
        8,
        8,
    ),
]


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "StandardVariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
        "hide": 0,
    }


def layout() -> list[dict[str, Any]]:
    panels, x, y, row_height = [], 0, 0, 0
    for number, (panel, width, height) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append({"id": number, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel})
        x += width
        row_height = max(row_height, height)
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes the redis-bus web app's /metrics",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "annotations": {"list": []},
        "description": "redis-bus: queues, channels, workers, subscribers, latency, losses",
        "editable": True,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout(),
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["redis-bus"],
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "DS_PROMETHEUS",
                    "label": "Prometheus",
                    "query": "prometheus",
                    "current": {},
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                    "hide": 0,
                },
                variable("queue", "Queue", "label_values(bus_queue_depth, queue)"),
                variable("channel", "Channel", "label_values(bus_channel_subscribers, channel)"),
            ]
        },
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "redis-bus",
        "uid": "redis-bus",
        "version": 1,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
