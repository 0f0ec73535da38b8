"""Dead letters stay bounded: a cap that trims the oldest and counts them, and a requeue that
never holds Redis for long, however many there are."""

from __future__ import annotations

import threading

import redis

from consumers.worker import Worker
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, decode, keys, make_client
from producer.store.deadletters import DeadLetters, dead_entry
from producer.store.envelope import new
from tests.inproc import running


def fail(env: Envelope) -> None:
    raise RuntimeError(f"refusing {env.payload}")


def test_the_dead_list_keeps_the_newest_and_counts_what_it_drops(
    settings: Settings, r: redis.Redis
) -> None:
    """BUS_DEAD_MAX 5, eight messages dead-lettered: the five newest stay, the three oldest
    are trimmed, and the drop is counted in Redis and in the worker's stats. One slot, so the
    messages die in the order they were sent."""
    capped = settings.replace(dead_max=5, max_attempts=1, concurrency=1)
    producer = Producer(make_client(capped, "producer"))
    worker = Worker(capped, "default", "w1", fail)
    with running(worker):
        for n in range(8):
            producer.push(n)
        wait_for(lambda: int(r.get(keys.dead_dropped("default")) or 0) == 3, 10, "three dropped")
    kept = [e["raw"] for e in DeadLetters(r, "default").entries(0, 10)]
    assert [new_payload(raw) for raw in kept] == [7, 6, 5, 4, 3]  # newest first
    assert int(r.hget(worker.stats.key, "dead_dropped")) == 3
    assert int(r.hget(worker.stats.key, "dead_lettered")) == 8


def new_payload(raw: str) -> int:
    return int(decode(raw).payload)


def test_requeuing_100000_dead_letters_never_blocks_redis_for_long(
    settings: Settings, r: redis.Redis
) -> None:
    """100,000 dead letters requeued in one call: every one is back on the queue as a first
    attempt, oldest first, and Redis's own slow log shows no command that held it for 50 ms
    (one script over the whole list would hold it for seconds)."""
    n = 100_000
    pipe = r.pipeline(transaction=False)
    for i in range(n):  # dead_entry puts the newest at the head, as the workers do
        env = new(i, src="t", seq=i + 1, mode="prodcons")
        pipe.lpush(keys.dead("default"), dead_entry(env.encode(), "boom", queue="default"))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.config_set("slowlog-log-slower-than", 50_000)  # microseconds
    r.slowlog_reset()
    done: list[tuple[int, int]] = []
    thread = threading.Thread(target=lambda: done.append(DeadLetters(r, "default").requeue()))
    thread.start()
    thread.join(120)
    assert done == [(n, 0)]
    slow = [(e["duration"], e["command"][:80]) for e in r.slowlog_get(10)]
    assert slow == [], slow
    assert r.llen(keys.dead("default")) == 0 and r.llen(keys.pending("default")) == n
    oldest, newest = r.lindex(keys.pending("default"), -1), r.lindex(keys.pending("default"), 0)
    assert decode(oldest).payload == 0 and decode(newest).payload == n - 1  # FIFO kept
    assert decode(oldest).attempt == 1


def test_a_time_limit_survives_retries_dead_lettering_and_requeue(
    settings: Settings, r: redis.Redis
) -> None:
    """A message pushed with timeout_s keeps it on each retry the worker writes, in its dead
    letter, and when it is requeued as a first attempt."""
    seen: list[tuple[int, float | None]] = []

    def fail_noting(env: Envelope) -> None:
        seen.append((env.attempt, env.timeout_s))
        raise RuntimeError("refused")

    capped = settings.replace(max_attempts=2)
    Producer(make_client(capped, "producer")).push("job", timeout_s=42.5)
    with running(Worker(capped, "default", "w1", fail_noting)):
        wait_for(lambda: r.llen(keys.dead("default")) == 1, 10, "dead-lettered")
    assert seen == [(1, 42.5), (2, 42.5)]
    (entry,) = DeadLetters(r, "default").entries(0, 1)
    assert decode(entry["raw"]).timeout_s == 42.5
    assert DeadLetters(r, "default").requeue() == (1, 0)
    again = decode(r.lindex(keys.pending("default"), 0))
    assert (again.attempt, again.timeout_s, again.payload) == (1, 42.5, "job")
