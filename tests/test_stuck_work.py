"""Stuck work in ``/api/stats`` and ``/metrics``: what a worker's handlers hold, how old the
oldest of it is against its limit, the handlers it abandoned, and ``overdue``.

Workers here are stats hashes and heartbeats written as a worker writes them
(:mod:`tests.inhandkit`), on the emptied session server, read through the Flask app.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from producer import Settings, keys
from producer.observe.stats import Stats
from tests.inhandkit import DELIVERY, ReportingWorker, hands, reporting
from tests.webapp import MakeApp, assert_json
from web.openapi import describe

IN_HAND = ("slots", "busy", "oldest_age_ms", "oldest_limit_ms", "overdue", "abandoned")


@pytest.fixture
def client(make_app: MakeApp, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """A test client whose overview is read from Redis on each request (no cache to wait out)."""
    monkeypatch.setattr("web.bus.OVERVIEW_CACHE_S", 0.0)
    return make_app(settings).test_client()


def overview(c: FlaskClient) -> dict[str, Any]:
    return assert_json(c.get("/api/stats"))


def workers(c: FlaskClient) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in overview(c)["workers"]}


def scrape(c: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One /metrics, parsed by prometheus_client: (sample, sorted labels) -> value."""
    text = c.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def old_worker(r: redis.Redis, name: str) -> None:
    """A worker of before the in-hand fields: its stats without them, its heartbeat."""
    worker = ReportingWorker(r, "default", name)
    worker.stats.incr("handled", 4)
    worker.tick()


def test_a_busy_worker_within_its_limit_is_not_overdue(client: FlaskClient, r: redis.Redis) -> None:
    """3 of 8 in hand, the oldest 12.3 s old with a 30 s limit: shown, not overdue; the queue
    sums busy and slots; an idle worker shows 0 in hand and no oldest."""
    with (
        reporting(r, "default", "w1", **hands(8, 3, oldest_age_ms=12_300, limit_ms=30_000)),
        reporting(r, "default", "w2", **hands(4)),
    ):
        rows = workers(client)
        w1, w2 = rows["w1"], rows["w2"]
        assert (w1["slots"], w1["busy"], w1["oldest_limit_ms"]) == (8, 3, 30_000)
        assert 12_300 <= w1["oldest_age_ms"] < 12_300 + 5_000
        assert (w1["overdue"], w1["abandoned"], w1["timed_out"]) == (False, 0, 0)
        assert {k: w2[k] for k in IN_HAND} == {"slots": 4, "busy": 0, "oldest_age_ms": 0,
                                                 "oldest_limit_ms": 0, "overdue": False,
                                                 "abandoned": 0}  # fmt: skip
        queue = overview(client)["queues"]["default"]
        assert (queue["busy"], queue["slots"], queue["workers_alive"]) == (3, 12, 2)
        assert queue["timed_out_total"] == 0


def test_a_message_past_its_limit_or_an_abandoned_handler_is_overdue(
    client: FlaskClient, r: redis.Redis
) -> None:
    """The oldest in hand 40 s old with a 30 s limit: overdue. A handler abandoned (its
    message already settled, nothing in hand): overdue too. timed_out is with the counters."""
    late = hands(8, 1, oldest_age_ms=40_000, limit_ms=30_000)
    with (
        reporting(r, "default", "late", **late),
        reporting(r, "default", "gave-up", **hands(8, abandoned=2)) as w_gave_up,
    ):
        w_gave_up.stats.incr("timed_out", 2)
        w_gave_up.tick()
        rows = workers(client)
        assert rows["late"]["overdue"] and rows["late"]["abandoned"] == 0
        assert rows["late"]["oldest_age_ms"] > rows["late"]["oldest_limit_ms"] == 30_000
        gave_up = rows["gave-up"]
        assert gave_up["overdue"] and (gave_up["abandoned"], gave_up["busy"]) == (2, 0)
        assert gave_up["timed_out"] == 2
        assert overview(client)["queues"]["default"]["timed_out_total"] == 2


def test_past_the_limit_by_less_than_one_stats_interval_is_not_overdue_yet(
    client: FlaskClient, r: redis.Redis
) -> None:
    """The hash may be one interval old: a worker that gave up on the message at its limit
    has not said so yet. Past the limit by more than its interval, it is overdue."""
    worker = ReportingWorker(r, "default", "w1", interval_s=5.0)
    worker.report(**hands(8, 1, oldest_age_ms=31_000, limit_ms=30_000))
    assert not workers(client)["w1"]["overdue"]
    worker.report(**hands(8, 1, oldest_age_ms=36_000, limit_ms=30_000))
    assert workers(client)["w1"]["overdue"]
    worker.leave()


def test_a_worker_without_the_fields_shows_nothing_new(client: FlaskClient, r: redis.Redis) -> None:
    """A worker that does not write them (an older one): no in-hand keys, no queue sums, no
    gauges; its counters as before, timed_out 0 with them."""
    old_worker(r, "old")
    [row] = overview(client)["workers"]
    assert row["state"] == "alive" and row["handled"] == 4 and row["timed_out"] == 0
    assert not set(IN_HAND) & set(row)
    assert not {"busy", "slots"} & set(overview(client)["queues"]["default"])
    assert not any(name.startswith("bus_worker_busy") for name, _ in scrape(client))


def test_a_dead_worker_shows_no_in_hand_view(
    client: FlaskClient, r: redis.Redis, settings: Settings
) -> None:
    """Its heartbeat past the TTL: what it held is its in-flight list and the reaper's; the
    age of a stale report would only grow, so none is shown and it is not overdue."""
    worker = ReportingWorker(r, "default", "gone", heartbeat_ttl_s=settings.heartbeat_ttl_s)
    worker.report(**hands(8, 2, oldest_age_ms=60_000, limit_ms=30_000, abandoned=1))
    assert workers(client)["gone"]["overdue"]
    r.zadd(keys.consumers("default"), {"gone": 1})  # its last heartbeat, long ago
    row = workers(client)["gone"]
    assert row["state"] == "dead" and not set(IN_HAND) & set(row)


def test_metrics_show_the_gauges_and_the_timed_out_counter(
    client: FlaskClient, r: redis.Redis
) -> None:
    """Gauges per live worker (queue, name): busy, slots, the oldest's age and limit in
    seconds, abandoned; bus_messages_timed_out_total per queue, 0 before the first; a worker
    that left has no in-hand series."""
    labels = (("name", "w1"), ("queue", "default"))
    timed_out = ("bus_messages_timed_out_total", (("queue", "default"),))
    with reporting(r, "default", "w1", **hands(8, 3, oldest_age_ms=12_000, limit_ms=30_000)):
        before = scrape(client)
    assert before[timed_out] == 0
    assert before[("bus_worker_busy", labels)] == 3
    assert before[("bus_worker_slots", labels)] == 8
    assert 12 <= before[("bus_worker_oldest_in_hand_age_seconds", labels)] < 17
    assert before[("bus_worker_oldest_in_hand_limit_seconds", labels)] == 30
    assert before[("bus_worker_abandoned_handlers", labels)] == 0

    with reporting(r, "default", "w1", **hands(8, abandoned=1)) as worker:
        worker.stats.incr("timed_out", 3)
        worker.tick()
        after = scrape(client)
    assert after[timed_out] == 3
    assert after[("bus_worker_abandoned_handlers", labels)] == 1
    assert after[("bus_worker_oldest_in_hand_age_seconds", labels)] == 0
    assert ("bus_worker_busy", labels) not in scrape(client)


def test_a_worker_stats_object_carries_the_fields_as_set() -> None:
    """The fields land beside the counters under the contract's names, as ints."""
    stats = Stats("worker", "default:w1", {"name": "w1", "delivery": DELIVERY})
    stats.set_state(**hands(8, 2, oldest_age_ms=5, limit_ms=1_000))
    snap = stats.snapshot()
    assert (snap["slots"], snap["busy"], snap["oldest_limit_ms"], snap["abandoned"]) == (
        8, 2, 1_000, 0)  # fmt: skip
    assert isinstance(snap["oldest_started_ms"], int) and snap["timed_out"] == 0


def test_api_stats_workers_conform_to_the_openapi_description(
    client: FlaskClient, r: redis.Redis, settings: Settings
) -> None:
    """Each worker row, with and without the in-hand fields, is a valid Worker of
    /openapi.json."""
    schema = describe(settings)["components"]["schemas"]["Worker"]
    old_worker(r, "old")
    with reporting(r, "default", "late", **hands(8, 2, oldest_age_ms=9_000, limit_ms=1_000)):
        rows = overview(client)["workers"]
    assert [w["name"] for w in rows] == ["late", "old"] and rows[0]["overdue"]
    for row in rows:
        Draft202012Validator(schema).validate(row)
    assert {"slots", "busy", "oldest_age_ms", "oldest_limit_ms", "overdue", "abandoned"} <= set(
        schema["properties"]
    )
