"""The Producer's connection handling and its per-message options, against a real redis-server."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import pytest
import redis

from loadtest.harness.server import RedisServer
from producer import Producer, Settings, decode, keys, make_client
from producer.settings.checks import MAX_TIMEOUT_S


class Interrupt(BaseException):
    """Stands for what can cut a call short anywhere: KeyboardInterrupt, gevent's GreenletExit."""


def test_an_interrupted_call_leaves_no_reply_for_the_next_one(fresh_redis: RedisServer) -> None:
    """A push interrupted while it waits for its reply must not hand that connection back to
    the pool with the reply still unread: the next push would read it as its own answer."""
    settings = Settings(redis_url=fresh_redis.url, socket_timeout_s=5.0)
    producer = Producer(make_client(settings, "producer"))
    assert producer.push("first").result == 1  # one pooled connection, warmed up

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupt()

    previous = signal.signal(signal.SIGALRM, interrupt)
    fresh_redis.pause()  # the LPUSH is written; its reply will come only after SIGCONT
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupt):
            producer.push("interrupted")
        # The next push starts while the reply is still on its way (the pool's own check for
        # data already waiting on a connection cannot see it yet).
        with ThreadPoolExecutor(1) as pool:
            third = pool.submit(producer.push, "third")
            time.sleep(0.3)
            fresh_redis.resume()
            sent = third.result(10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        fresh_redis.resume()
    admin = fresh_redis.client()
    assert admin.llen(keys.pending("default")) == 3  # Redis ran the interrupted one, then this
    assert sent.result == 3, "the answer must be this push's own reply, not the one left unread"


def test_each_message_carries_its_own_time_limit(settings: Settings, r: redis.Redis) -> None:
    """timeout_s goes into the envelope of every message of the call, pushed now, delayed or
    tracked; a push without it writes no timeout_s field at all."""
    producer = Producer(make_client(settings, "producer"))
    assert producer.push("now", timeout_s=90).envelope.timeout_s == 90.0
    batch = producer.push_many(["a", "b"], timeout_s=2.5)
    assert [s.envelope.timeout_s for s in batch] == [2.5, 2.5]
    producer.push("tracked", track=True, timeout_s=MAX_TIMEOUT_S)
    producer.push("plain")
    producer.push("later", delay_s=60, timeout_s=0.5)
    pending = [json.loads(raw) for raw in r.lrange(keys.pending("default"), 0, -1)][::-1]
    assert [e["payload"] for e in pending] == ["now", "a", "b", "tracked", "plain"]
    assert [e.get("timeout_s") for e in pending] == [90, 2.5, 2.5, MAX_TIMEOUT_S, None]
    assert "timeout_s" not in pending[-1]
    (delayed,) = r.zrange(keys.delayed("default"), 0, -1)
    assert decode(delayed).timeout_s == 0.5


BAD_TIMEOUTS = [0, -1, 0.0, -0.5, MAX_TIMEOUT_S + 0.001, 10**400, float("nan"), float("inf"),
                True, False, "30", [30]]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_TIMEOUTS, ids=repr)
def test_a_bad_time_limit_is_refused_before_anything_is_sent(
    settings: Settings, r: redis.Redis, bad: object
) -> None:
    """<= 0, NaN, inf, past 7 days, a bool, not a number: ValueError, for push and push_many,
    delayed or not, and nothing reaches Redis (the next message still gets seq 1)."""
    producer = Producer(make_client(settings, "producer"))
    calls: list[Callable[[], object]] = [
        lambda: producer.push("x", timeout_s=bad),  # type: ignore[arg-type]
        lambda: producer.push_many(["x", "y"], timeout_s=bad),  # type: ignore[arg-type]
        lambda: producer.push("x", delay_s=5, timeout_s=bad),  # type: ignore[arg-type]
        lambda: producer.push("x", track=True, timeout_s=bad),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(ValueError, match="timeout_s"):
            call()
    assert r.dbsize() == 0
    assert producer.push("ok").envelope.seq == 1
