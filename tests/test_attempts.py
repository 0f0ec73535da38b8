"""Attempts are counted honestly: a redelivery is an attempt only for a message that may have
reached the handler, and a broken link after handling does not deliver a message twice."""

from __future__ import annotations

import threading
import time

from consumers.worker import Worker
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, keys, make_client
from tests.conftest import quick_settings
from tests.inproc import running


def test_a_link_lost_mid_batch_costs_no_attempt_and_no_duplicate(
    fresh_redis: RedisServer,
) -> None:
    """Ten messages are claimed in one batch; the first one fails, and just then Redis stops
    answering for longer than the worker's read deadline (its next command gets no reply, it
    reconnects). Every message reached the handler exactly once as attempt 1, and the failed
    one comes back once, as attempt 2: nothing the handler never saw lost an attempt, nothing
    it handled is handled again."""
    settings = quick_settings(fresh_redis.url, batch_size=10)
    r = fresh_redis.client()
    Producer(make_client(settings, "producer")).push_many([{"n": n} for n in range(10)])
    seen: list[Envelope] = []
    in_first, frozen = threading.Event(), threading.Event()

    def handler(env: Envelope) -> None:
        seen.append(env)
        if env.payload["n"] == 0 and env.attempt == 1:
            in_first.set()
            assert frozen.wait(5)
            raise RuntimeError("the first one fails once")

    with running(Worker(settings, "default", "w1", handler)):
        assert in_first.wait(5)
        fresh_redis.pause()
        frozen.set()
        time.sleep(settings.worker_read_timeout_s + 1)  # the worker's next reply never comes
        fresh_redis.resume()
        wait_for(lambda: len(seen) >= 11, 10, "ten messages and one retry")
        wait_for(lambda: r.llen(keys.processing("default", "w1")) == 0, 5, "all settled")
        time.sleep(0.5)  # a wrongful redelivery would show now
    firsts: dict[int, int] = {}
    for e in seen:
        firsts.setdefault(e.payload["n"], e.attempt)
    assert firsts == dict.fromkeys(range(10), 1), [(e.payload, e.attempt) for e in seen]
    assert sorted((e.payload["n"], e.attempt) for e in seen) == [
        (0, 1), (0, 2), *((n, 1) for n in range(1, 10))
    ]  # fmt: skip
    assert r.llen(keys.pending("default")) == 0
