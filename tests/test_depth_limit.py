"""BUS_MAX_QUEUE_DEPTH: past it producers refuse messages (HTTP 429, ``QueueFull``), the check
and the push one atomic step, against real redis-servers."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from consumers.worker import Worker
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import (
    Envelope,
    Producer,
    QueueFull,
    Settings,
    SettingsError,
    decode,
    keys,
    make_client,
)
from producer.observe.stats import Stats
from tests.inproc import running
from tests.procs import get_json
from tests.webapp import MakeApp, assert_json, post_json, start_gunicorn

PENDING = keys.pending("default")


def payloads_in(r: redis.Redis) -> list[object]:
    """The payloads pending on queue default, oldest first."""
    return [decode(raw).payload for raw in reversed(r.lrange(PENDING, 0, -1))]


def test_the_setting_is_read_and_validated() -> None:
    """BUS_MAX_QUEUE_DEPTH: unset or 0 is no limit; a negative value is refused by name."""
    assert Settings.from_env({}).max_queue_depth == 0
    assert Settings.from_env({"BUS_MAX_QUEUE_DEPTH": "5"}).max_queue_depth == 5
    with pytest.raises(SettingsError, match="BUS_MAX_QUEUE_DEPTH"):
        Settings.from_env({"BUS_MAX_QUEUE_DEPTH": "-1"})


def test_past_the_limit_the_web_answers_429_until_a_worker_drains(
    make_app: MakeApp, settings: Settings, r: redis.Redis
) -> None:
    """Limit 5: five accepted, then 429 JSON with Retry-After and outcome "rejected" for POST,
    GET and a form, nothing pushed, refusals counted in /api/stats; once a worker has drained
    the queue the next message goes in, with the next sequence number."""
    c = make_app(settings.replace(max_queue_depth=5)).test_client()
    for i in range(1, 6):
        code, body = post_json(c, "/prodcons", {"payload": i})
        assert code == 202 and body["depth"] == i and body["seq"] == i, body
    refused = [
        c.post("/prodcons", json={"payload": 6}),
        c.get("/prodcons"),
        c.post("/prodcons", data={"payload": "from a form"}),
    ]
    for resp in refused:
        assert resp.status_code == 429, resp.get_data(as_text=True)
        assert int(resp.headers["Retry-After"]) >= 1
        body = assert_json(resp)
        assert body["outcome"] == "rejected" and "full" in body["error"]
        assert (body["queue"], body["depth"], body["limit"]) == ("default", 5, 5)
    assert payloads_in(r) == [1, 2, 3, 4, 5]

    def web_totals() -> dict[str, int]:
        return assert_json(c.get("/api/stats"))["totals"].get("web", {})

    wait_for(lambda: web_totals().get("refused_full") == 3, 5, "3 refusals in /api/stats")
    assert web_totals()["rejected"] >= 3 and web_totals()["pushed"] == 5

    seen: list[Envelope] = []
    with running(Worker(settings, "default", "w1", seen.append)):
        wait_for(lambda: len(seen) == 5 and r.llen(PENDING) == 0, 10, "the worker to drain")
    code, body = post_json(c, "/prodcons", {"payload": 7})
    assert code == 202 and body["depth"] == 1
    assert body["seq"] == 6  # the refused ones used no sequence number: no false gap


def test_a_batch_goes_in_whole_or_not_at_all(settings: Settings, r: redis.Redis) -> None:
    """Producer API: push_many pushes all of a batch only if all of it fits; QueueFull says
    why and is counted; the script is found again after Redis forgot it (SCRIPT FLUSH)."""
    stats = Stats("test", "p")
    producer = Producer(make_client(settings, "producer"), stats=stats, max_queue_depth=5)
    assert [s.result for s in producer.push_many(["a", "b", "c"])] == [1, 2, 3]
    with pytest.raises(QueueFull) as info:
        producer.push_many(["d", "e", "f"])
    assert (info.value.queue, info.value.depth, info.value.limit, info.value.count) == (
        "default", 3, 5, 3,
    )  # fmt: skip
    assert payloads_in(r) == ["a", "b", "c"]
    r.script_flush()
    assert [s.result for s in producer.push_many(["d", "e"])] == [4, 5]
    with pytest.raises(QueueFull):
        producer.push("f")
    assert payloads_in(r) == ["a", "b", "c", "d", "e"]
    assert (stats.get("refused_full"), stats.get("pushed")) == (4, 5)


def test_a_large_batch_under_a_high_limit_keeps_its_order(
    settings: Settings, r: redis.Redis
) -> None:
    """A batch far longer than Lua can unpack at once (2,500) goes in whole and in order."""
    producer = Producer(make_client(settings, "producer"), max_queue_depth=10_000)
    sent = producer.push_many(list(range(2500)))
    assert sent[-1].result == 2500
    assert payloads_in(r) == list(range(2500))


def test_concurrent_producers_never_pass_the_limit(settings: Settings, r: redis.Redis) -> None:
    """16 producers (each its own connection) push 30 messages each at once onto one queue
    with limit 50: exactly 50 are accepted, and they are exactly what the list holds."""
    limit, threads, each = 50, 16, 30
    start = threading.Barrier(threads, timeout=10)

    def hammer(n: int) -> list[str]:
        producer = Producer(make_client(settings, "producer"), max_queue_depth=limit)
        start.wait()
        accepted = []
        for i in range(each):
            with contextlib.suppress(QueueFull):
                accepted.append(producer.push({"p": n, "i": i}).envelope.id)
        return accepted

    with ThreadPoolExecutor(threads) as pool:
        accepted = [i for ids in pool.map(hammer, range(threads)) for i in ids]
    held = [decode(raw).id for raw in r.lrange(PENDING, 0, -1)]
    assert len(held) <= limit
    assert sorted(accepted) == sorted(held) and len(accepted) == limit


@pytest.mark.slow
def test_gunicorn_workers_together_never_pass_the_limit(tmp_path: Path) -> None:
    """Four gunicorn processes, 40 clients posting at once, limit 20: exactly 20 answers are
    202 and 20 messages wait; every other answer is 429; the web's totals count the refusals."""
    server = RedisServer(tmp_path / "redis").start()
    gunicorn, base = start_gunicorn(
        server.url, tmp_path / "gunicorn.log", BUS_MAX_QUEUE_DEPTH="20", BUS_WEB_WORKERS="4",
        BUS_STATS_INTERVAL_S="0.1",
    )  # fmt: skip
    try:
        start = threading.Barrier(40, timeout=20)

        def post(n: int) -> list[int]:
            start.wait()
            with requests.Session() as s:
                url = base + "/prodcons"
                return [s.post(url, json={"payload": [n, i]}, timeout=10).status_code
                        for i in range(3)]  # fmt: skip

        with ThreadPoolExecutor(40) as pool:
            codes = [code for batch in pool.map(post, range(40)) for code in batch]
        assert codes.count(202) == 20 and codes.count(429) == 100, codes
        assert server.client().llen(PENDING) == 20

        def refusals_counted() -> bool:
            totals = (get_json(base + "/api/stats") or {}).get("totals", {}).get("web", {})
            return totals.get("refused_full") == 100 and totals.get("pushed") == 20

        wait_for(refusals_counted, 10, "the web processes to count 100 refusals", every_s=0.2)
    finally:
        gunicorn.stop()
        server.kill()
