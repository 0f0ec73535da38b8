"""The Producer's connection handling, against a real redis-server."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import pytest

from loadtest.harness.server import RedisServer
from producer import Producer, Settings, keys, make_client


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
