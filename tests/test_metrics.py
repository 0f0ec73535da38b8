"""Bus-wide counters, the rate history and ``GET /metrics``.

The totals in ``bus:{stats}:totals`` never go down: a write repeated after a lost reply adds
nothing, a process that dies keeps what it counted, a restart under the same name adds from
zero. ``/metrics`` (parsed by prometheus_client's own parser) says what ``/api/stats`` says,
from any gunicorn worker.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from producer.observe.stats import Stats
from producer.observe.totals import parse_totals, read_history, sum_counters
from tests.conftest import QUICK_ENV
from tests.procs import Proc, get_json
from tests.webapp import start_gunicorn
from web.bus import OVERVIEW_CACHE_S

WORKER_SCOPE = {"queue": "jobs", "delivery": "at-least-once"}


def flush(r: redis.Redis, stats: Stats) -> None:
    pipe = r.pipeline(transaction=False)
    stats.flush(pipe, 60, 0.1)
    pipe.execute()


def totals(r: redis.Redis) -> list[dict[str, Any]]:
    return parse_totals(r.hgetall(keys.STATS_TOTALS))


def test_totals_are_idempotent_outlive_the_process_and_restart_from_zero(r: redis.Redis) -> None:
    worker = Stats("worker", "jobs:w1", {"name": "w1"}, WORKER_SCOPE)
    worker.incr("handled", 5)
    flush(r, worker)
    flush(r, worker)  # the same absolute values again: nothing added twice
    assert sum_counters(totals(r), "handled", queue="jobs", delivery="at-least-once") == 5
    worker.incr("handled", 2)
    flush(r, worker)
    assert sum_counters(totals(r), "handled", role="worker") == 7

    r.delete(worker.key)  # its stats expired: it died long ago
    assert sum_counters(totals(r), "handled", role="worker") == 7

    again = Stats("worker", "jobs:w1", {"name": "w1"}, WORKER_SCOPE)  # restarted, same name
    again.incr("handled", 3)
    flush(r, again)
    assert sum_counters(totals(r), "handled", role="worker") == 10


def test_producers_count_per_destination_and_the_histogram_per_mode(r: redis.Redis) -> None:
    web = Stats("web", "a")
    web.incr("pushed", 2, "jobs")
    web.incr("pushed", 3, "mail|urgent")  # any name: the field quotes it
    web.incr("published", 4, "news")
    web.incr("published_zero", 1, "news")
    sub = Stats("subscriber", "s1")
    sub.incr_dests("received", {"news": 3})
    sub.incr("lost", 1, "news")
    sub.observe_latencies_ms([0, 3, 70_000])
    flush(r, web)
    flush(r, sub)
    t = totals(r)
    assert sum_counters(t, "pushed", queue="jobs") == 2
    assert sum_counters(t, "pushed", queue="mail|urgent") == 3
    assert sum_counters(t, "published_zero", channel="news", role="web") == 1
    assert sum_counters(t, "received", channel="news") == 3
    assert sum_counters(t, "lost", channel="news") == 1
    assert sum_counters(t, "lat_count", mode="pubsub") == 3
    assert sum_counters(t, "lat_le_1", mode="pubsub") == 1
    assert sum_counters(t, "lat_le_inf", mode="pubsub") == 1
    assert sum_counters(t, "lat_count", mode="prodcons") == 0


def test_history_gains_one_sample_a_second_and_gives_rates(r: redis.Redis) -> None:
    web = Stats("web", "a")
    for _ in range(20):  # many writes within a second: one sample, taken at the first
        web.incr("pushed", 10, "jobs")
        flush(r, web)
    assert r.llen(keys.STATS_HISTORY) == 1
    time.sleep(1.05)
    web.incr("pushed", 100, "jobs")
    flush(r, web)
    first, second = (json.loads(x) for x in r.lrange(keys.STATS_HISTORY, 0, -1))
    assert (first["pushed"], second["pushed"]) == (10, 300)
    assert 1000 <= second["t"] - first["t"] < 5000  # on Redis's clock
    (point,) = read_history(r)["points"]
    assert point["pushed"] == round(290 * 1000 / (second["t"] - first["t"]), 2)
    assert point["handled"] == 0 and not point["gap"]


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape, parsed by prometheus_client: (sample name, sorted labels) -> value."""
    text = requests.get(base + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stats(base: str) -> dict[str, Any]:
    body = get_json(base + "/api/stats")
    assert body is not None
    return body


def post(base: str, path: str, n: int) -> None:
    for i in range(n):
        resp = requests.post(base + path, json={"payload": i}, timeout=5)
        assert resp.status_code == 202, resp.text


@pytest.mark.slow
def test_metrics_match_api_stats_from_every_gunicorn_worker_and_survive_a_crash(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    env = {**QUICK_ENV, "BUS_WEB_WORKERS": "3", "BUS_STATS_TTL_S": "2"}
    web, base = start_gunicorn(fresh_redis.url, tmp_path / "gunicorn.log", **env)
    try:
        worker = spawn("worker", fresh_redis.url, "--name", "w1", BUS_STATS_TTL_S="2")
        spawn("subscriber", fresh_redis.url, "--name", "s1", BUS_STATS_TTL_S="2")
        wait_for(lambda: stats(base)["channels"]["default"]["subscribers"] == 1, 15, "subscribed")
        post(base, "/prodcons", 30)
        post(base, "/pubsub", 20)

        def settled() -> bool:
            s = stats(base)
            return (
                s["queues"]["default"]["handled_total"] == 30
                and s["channels"]["default"]["received_total"] == 20
                and s["queues"]["default"]["pushed_total"] == 30
            )

        wait_for(settled, 15, "30 handled and 20 received in /api/stats")
        time.sleep(OVERVIEW_CACHE_S + 0.1)  # every worker's cached overview is newer now
        s = stats(base)
        scrapes = [metrics(base) for _ in range(6)]  # answered by any of the 3 workers
        for m in scrapes:
            q, ch = (("queue", "default"),), (("channel", "default"),)
            assert m[("bus_messages_pushed_total", q)] == s["queues"]["default"]["pushed_total"]
            handled = (("delivery", "at-least-once"), ("queue", "default"))
            assert m[("bus_messages_handled_total", handled)] == 30
            assert m[("bus_messages_published_total", ch)] == 20
            assert m[("bus_pubsub_received_total", ch)] == 20
            assert m.get(("bus_pubsub_lost_total", ch), 0) == s["channels"]["default"]["lost_total"]
            assert m[("bus_queue_depth", q)] == s["queues"]["default"]["depth"] == 0
            assert m[("bus_worker_up", (("name", "w1"), ("queue", "default")))] == 1
            assert m[("bus_subscriber_up", (("name", "s1"),))] == 1
            assert m[("bus_channel_subscribers", ch)] == 1
            lat = (("mode", "prodcons"),)
            assert m[("bus_delivery_latency_seconds_count", lat)] == 30
            assert m[("bus_delivery_latency_seconds_bucket", (("le", "+Inf"), *lat))] == 30

        os.kill(worker.proc.pid, signal.SIGKILL)
        # Its heartbeat ages out (TTL 3 s) and its stats hash expires (2 s): the live sums of
        # /api/stats forget it, the bus-wide counters do not.
        wait_for(lambda: not stats(base)["totals"].get("worker"), 10, "its stats to expire")
        up = (("name", "w1"), ("queue", "default"))
        wait_for(lambda: metrics(base)[("bus_worker_up", up)] == 0, 10, "bus_worker_up 0")
        after = metrics(base)
        handled = (("delivery", "at-least-once"), ("queue", "default"))
        assert after[("bus_messages_handled_total", handled)] == 30
        assert stats(base)["queues"]["default"]["handled_total"] == 30
    finally:
        web.stop()
