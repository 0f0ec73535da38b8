"""``worker --ordered --queue high --queue default --queue low`` (RQ's ``rq worker high default
low``): a queue's messages are taken only while every queue before it has none pending, at any
priority level. Each message's handler looks, as it starts, at the queues before its own."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any

import redis

from consumers.worker import Worker
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, keys
from producer.store.counts import read_balance
from tests.inproc import running
from tests.procs import project_env, run_cli

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

    def handler(env: Envelope) -> None:
        queue = env.payload["q"]
        before = {q: depth(probe, q) for q in ORDER[: ORDER.index(queue)]}
        with lock:
            seen.append((queue, before))

    ordered = settings.replace(concurrency=2)
    with ExitStack() as stack:
        for i, queue in enumerate(ORDER):
            stack.enter_context(running(Worker(ordered, queue, "w", handler, (), ORDER[:i])))
        wait_for(lambda: len(seen) >= 195, 10, "every message handled")
    probe.close()
    assert [q for q, _ in seen].count("high") == 155
    late = [(q, before) for q, before in seen if any(before.values())]
    assert late == [], f"{len(late)} started while a queue before theirs had messages: {late[:3]}"
    first = {q: next(i for i, (x, _) in enumerate(seen) if x == q) for q in ORDER}
    assert first["high"] < first["default"] < first["low"]
    assert first["default"] >= 150  # the high backlog was all claimed first
    for queue in ORDER:
        assert read_balance(r, queue)["unaccounted"] == 0


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
