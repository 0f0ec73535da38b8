"""``worker --ordered --queue high --queue default --queue low`` (RQ's ``rq worker high default
low``): a queue's messages are taken only while every queue before it has none pending, at any
priority level. Each message's handler looks, as it starts, at the queues before its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.worker import Worker
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, keys
from producer.store.counts import read_balance
from producer.store.tracking import read_record
from tests.inproc import running
from tests.procs import Proc, project_env, read_records, run_cli

ORDER = ("high", "default", "low")


def depth(r: redis.Redis, queue: str) -> int:
    return int(r.llen(keys.pending(queue))) + sum(
        int(r.llen(keys.level(queue, p))) for p in range(1, 10))  # fmt: skip


def test_a_queue_is_served_only_while_those_before_it_have_nothing_pending(
    settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    for queue, n in (("low", 20), ("default", 20), ("high", 150)):
        producer.push_many([{"q": queue, "i": i} for i in range(n)], queue)
    producer.push_many([{"q": "high", "i": -1}] * 5, "high", priority=7)  # a level counts too
    seen: list[tuple[str, dict[str, int]]] = []
    lock = threading.Lock()
    probe = redis.Redis.from_url(settings.redis_url)

    running_now = [0, 0]  # handlers running at once across the queues, and the most seen

    def handler(env: Envelope) -> None:
        queue = env.payload["q"]
        before = {q: depth(probe, q) for q in ORDER[: ORDER.index(queue)]}
        with lock:
            seen.append((queue, before))
            running_now[0] += 1
            running_now[1] = max(running_now)
        time.sleep(0.001)
        with lock:
            running_now[0] -= 1

    ordered = settings.replace(concurrency=2)
    workers = [Worker(ordered, q, "w", handler, (), ORDER[:i]) for i, q in enumerate(ORDER)]
    for w in workers:
        w.share_slots(workers)
    with ExitStack() as stack:
        for w in workers:
            stack.enter_context(running(w))
        wait_for(lambda: len(seen) >= 195, 10, "every message handled")
    print(f"most handlers at once: {running_now[1]}")
    probe.close()
    assert [q for q, _ in seen].count("high") == 155
    late = [(q, before) for q, before in seen if any(before.values())]
    assert late == [], f"{len(late)} started while a queue before theirs had messages: {late[:3]}"
    first = {q: next(i for i, (x, _) in enumerate(seen) if x == q) for q in ORDER}
    assert first["high"] < first["default"] < first["low"]
    assert first["default"] >= 150  # the high backlog was all claimed first
    for queue in ORDER:
        assert read_balance(r, queue)["unaccounted"] == 0


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_an_idle_queue_gives_back_what_it_popped_while_one_before_it_filled(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    """The low queue's worker waits in its blocking pop (high was empty); high fills, then a low
    message comes: it is given back unchanged, not handled until high has nothing pending."""
    seen: list[Any] = []
    low = Worker(settings.replace(delivery=delivery, block_timeout_s=5.0), "low", "w",
                 lambda env: seen.append(env.payload), (), ("high",))  # fmt: skip
    producer = Producer.from_settings(settings)
    with running(low):
        wait_for(lambda: any(c.get("cmd") in ("blmove", "brpop") for c in r.client_list()), 5,
                 "the worker in its blocking pop")  # fmt: skip
        producer.push("h", "high")
        sent = producer.push("l", "low", track=True).envelope.id
        time.sleep(0.5)
        assert seen == [] and depth(r, "low") == 1
        record = read_record(r, "low", sent)
        assert record is not None and record["state"] == "pending"
        r.delete(keys.pending("high"))  # high's turn is over
        wait_for(lambda: seen == ["l"], 5, "the low message, once high is empty")
    balance = read_balance(r, "low")
    assert balance["unaccounted"] == 0 and balance["pending"] == 0


def test_unordered_queues_are_served_at_once(settings: Settings, r: redis.Redis) -> None:
    """Without --ordered each queue is served on its own: the low queue does not wait."""
    producer = Producer.from_settings(settings)
    producer.push_many(list(range(200)), "high")
    producer.push_many(list(range(5)), "low")
    got = {"high": 0, "low": 0}

    def counting(queue: str, sleep_s: float) -> Any:
        def handle(env: Envelope) -> None:
            time.sleep(sleep_s)
            got[queue] += 1

        return handle

    one = settings.replace(concurrency=1)
    with (running(Worker(one, "high", "w", counting("high", 0.01))),
          running(Worker(one, "low", "w", counting("low", 0)))):  # fmt: skip
        wait_for(lambda: got["low"] == 5, 5, "the low queue, beside the high one")
        assert depth(r, "high") > 0


def test_the_cli_says_it_serves_the_queues_in_order(
    redis_server: RedisServer, r: redis.Redis
) -> None:
    shown = run_cli("worker", "--help", env=project_env(redis_server.url)).stdout
    text = " ".join(shown.split())
    assert "--ordered" in text and "as 'rq worker high default low' does" in text, shown


def test_a_worker_process_started_ordered_takes_the_high_backlog_first(
    redis_server: RedisServer, r: redis.Redis, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """``python -m consumers worker --ordered --queue high --queue low``, started on a backlog
    in both: each low message's handler starts with nothing pending on high."""
    producer = Producer(redis.Redis.from_url(redis_server.url))
    producer.push_many([{"q": "low", "n": i} for i in range(30)], "low")
    producer.push_many([{"q": "high", "n": i} for i in range(300)], "high")
    spawn("worker", redis_server.url, "--ordered", "--queue", "high", "--queue", "low",
          "--handler", "tests.handlers_for_tests:probe_first", BUS_CONCURRENCY="4",
          TEST_BUS_PROBE_URL=redis_server.url, TEST_BUS_PROBE_QUEUE="high")  # fmt: skip
    path = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(path)) >= 330, 20, "both backlogs handled")
    records = read_records(path)
    low = [x for x in records if x["payload"]["q"] == "low"]
    assert len(low) == 30 and all(x["before"] == 0 for x in low), low[:3]
    assert records[0]["payload"]["q"] == "high"
