"""The conservation check (producer/store/counts.py): whatever the bus's own producers, workers,
reaper and dead-letter requeue do, ``pushed + requeued = acked + dead + taken + what the lists
hold``; a message that leaves the lists behind the bus's back, or one that enters them without
its count, shows as ``unaccounted``."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from consumers.lists import QueueOps
from consumers.worker import Worker
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, keys, make_client
from producer.store.counts import read_balance
from producer.store.deadletters import DeadLetters
from tests.conftest import quick_settings
from tests.inproc import running
from tests.procs import Proc, get_json
from tests.queuekit import AT_MOST_ONCE, PENDING, PROCESSING_GLOB, SLOW
from tests.test_status import rows_of, run_status
from tests.webapp import start_gunicorn

Q = "default"


def balanced(r: redis.Redis) -> dict[str, int]:
    b = read_balance(r, Q)
    assert b["unaccounted"] == 0, b
    return b


def fail_odd(env: object) -> None:
    if env.payload["n"] % 2:  # type: ignore[attr-defined]
        raise RuntimeError("odd")


def test_every_way_the_bus_moves_a_message_keeps_the_balance(
    r: redis.Redis, redis_server: RedisServer
) -> None:
    """Plain, batched, limited, delayed and tracked pushes; a worker that fails half of them
    (retries, then dead letters); the dead letters requeued and handled; an at-most-once worker
    that stops with a batch in hand (given back). The balance holds after each step."""
    settings = quick_settings(redis_server.url, max_attempts=2, batch_size=10)
    producer = Producer(make_client(settings, "producer"))
    producer.push({"n": 0})
    producer.push_many([{"n": i} for i in range(1, 20)])
    producer.push({"n": 20}, delay_s=0.2)
    producer.push({"n": 22}, track=True)
    Producer(make_client(settings, "producer"), max_queue_depth=1000).push({"n": 24})
    assert balanced(r)["pushed"] == 23
    with running(Worker(settings, Q, "w", fail_odd)):
        wait_for(lambda: r.llen(keys.dead(Q)) == 10 and not r.llen(PENDING)
                 and not r.zcard(keys.delayed(Q)), 10, "handled or dead")  # fmt: skip
        time.sleep(0.2)
        b = balanced(r)
    assert (b["acked"], b["dead"], b["processing"]) == (13, 10, 0)
    assert DeadLetters(r, Q).requeue() == (10, 0)
    assert balanced(r)["requeued"] == 10
    with running(Worker(settings, Q, "w", lambda env: None)):
        wait_for(lambda: not r.llen(PENDING) and not r.keys(PROCESSING_GLOB), 10, "drained")
        time.sleep(0.2)
    assert balanced(r)["acked"] == 23

    amo = quick_settings(redis_server.url, delivery="at-most-once", batch_size=5, concurrency=1)
    producer.push_many([{"n": i} for i in range(8)])
    stop_after_one: list[Worker] = []

    def stop_at_first(env: object) -> None:
        stop_after_one[0].stop()

    worker = Worker(amo, Q, "amo", stop_at_first)
    stop_after_one.append(worker)
    with running(worker):
        wait_for(lambda: worker.stopping.is_set(), 10, "the first message handled")
    b = balanced(r)
    assert b["taken"] == 1 and b["pending"] == 7, b  # the rest of its batch went back


def test_a_crashed_worker_and_the_reaper_keep_the_balance(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """kill -9 of a worker holding a batch: while its list waits for the reaper the balance
    holds (a registered worker's list counts), and after the survivor's reaper gives it back."""
    r = fresh_redis.client()
    Producer(make_client(quick_settings(fresh_redis.url), "producer")).push_many(
        [{"sleep_s": 0.2} for _ in range(20)]
    )
    victim = spawn("worker", fresh_redis.url, "--name", "victim", "--handler", SLOW,
                   "--concurrency", "20")  # fmt: skip
    wait_for(lambda: r.llen(keys.processing(Q, "victim")) == 20, 10, "the claim")
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    balanced(r)
    spawn("worker", fresh_redis.url, "--name", "survivor", "--handler", SLOW,
          BUS_REAPER_INTERVAL_S="0.5")  # fmt: skip
    wait_for(lambda: not r.llen(PENDING) and not r.keys(PROCESSING_GLOB), 30, "drained")
    assert balanced(r)["acked"] == 20


def test_what_moves_behind_the_bus_back_is_unaccounted(r: redis.Redis) -> None:
    """A foreign LPUSH without its count is a surplus (-1); one with ``HINCRBY pushed`` in
    the same MULTI is counted; a processing list deleted, or whose worker is in no registry,
    is missing (+n) until the reaper gives the latter back."""
    ops = QueueOps(r, Q)
    r.lpush(PENDING, b'{"v":1,"id":"foreign","payload":1}')
    assert read_balance(r, Q)["unaccounted"] == -1
    with r.pipeline(transaction=True) as pipe:
        pipe.lpush(PENDING, b'{"v":1,"id":"counted","payload":2}').hincrby(
            keys.counts(Q), "pushed", 1
        )
        pipe.execute()
    assert read_balance(r, Q)["unaccounted"] == -1
    r.hincrby(keys.counts(Q), "pushed", 1)  # the first one's count, late
    balanced(r)
    assert ops.claim("gone", 2) and read_balance(r, Q)["unaccounted"] == 2  # unregistered
    assert ops.reap(3.0, orphans=True) == {"gone": (2, 0)}
    balanced(r)
    r.zadd(keys.consumers(Q), {"w": 1})
    assert len(ops.claim("w", 2) + ops.claim("w", 2)) == 2  # redelivered: claimed alone
    balanced(r)
    r.delete(keys.processing(Q, "w"))
    assert read_balance(r, Q)["unaccounted"] == 2


def test_an_at_most_once_worker_killed_with_messages_in_hand_shows_them_taken(
    fresh_redis: RedisServer, spawn: Callable[..., Proc]
) -> None:
    """At-most-once, kill -9 mid-batch: the messages in hand were counted as taken when
    popped, so the balance holds; their loss is the mode's guarantee (the worker's own stats
    and the handler's records tell handled from lost)."""
    r = fresh_redis.client()
    Producer(make_client(quick_settings(fresh_redis.url), "producer")).push_many(
        [{"sleep_s": 0.5} for _ in range(10)]
    )
    worker = spawn("worker", fresh_redis.url, "--handler", SLOW, *AT_MOST_ONCE,
                   BUS_BATCH_SIZE="10")  # fmt: skip
    wait_for(lambda: r.llen(PENDING) == 0, 10, "the batch taken")
    worker.signal(signal.SIGKILL)
    worker.wait(5)
    assert balanced(r)["taken"] == 10


def test_an_imbalance_shows_in_api_stats_metrics_and_status(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    """Two messages deleted from a worker's list behind the bus's back: ``/api/stats`` says
    ``unaccounted: 2``, ``/metrics`` ``bus_queue_unaccounted{queue="default"} 2.0``, and
    ``consumers status`` shows 2 in its queue row."""
    r = fresh_redis.client()
    Producer(make_client(quick_settings(fresh_redis.url), "producer")).push_many([1, 2, 3])
    r.zadd(keys.consumers(Q), {"w": 1})
    QueueOps(r, Q).claim("w", 2)
    r.delete(keys.processing(Q, "w"))
    gunicorn, base = start_gunicorn(fresh_redis.url, tmp_path / "gunicorn.log")
    try:
        stats = get_json(base + "/api/stats")
        metrics = requests.get(base + "/metrics", timeout=5).text
    finally:
        gunicorn.stop()
    assert stats["queues"][Q]["balance"] == {
        "pushed": 3, "requeued": 0, "acked": 0, "dead": 0, "taken": 0, "cancelled": 0, "pending": 1,
        "processing": 0, "delayed": 0, "waiting": 0, "unaccounted": 2}  # fmt: skip
    assert 'bus_queue_unaccounted{queue="default"} 2.0' in metrics
    assert 'bus_queue_moves_total{queue="default",what="pushed"} 3.0' in metrics
    status = run_status(fresh_redis.url)
    assert rows_of(status.stdout, "QUEUES")[0]["unaccounted"] == "2", status.stdout
