"""Durability settings without a failover: WAIT for replicas, and the Sentinel settings."""

from __future__ import annotations

import time

import pytest
import redis

from producer import NotReplicated, Producer, Settings, SettingsError, keys, make_client
from producer.observe.stats import Stats

Q = "default"


def test_a_push_no_replica_confirmed_raises_not_replicated(settings: Settings,
                                                           r: redis.Redis) -> None:  # fmt: skip
    """No replica: WAIT 1 times out; the push ran on the primary and says so."""
    stats = Stats("web", "t", {})
    producer = Producer(make_client(settings, "producer", "t"), stats=stats, wait_replicas=1,
                        wait_timeout_s=0.2)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(NotReplicated, match="0 of 1 replicas confirmed the write within 200 ms"):
        producer.push({"n": 1}, Q)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert r.llen(keys.pending(Q)) == 1  # on the primary
    assert stats.snapshot()["unconfirmed"] == 1
    with pytest.raises(NotReplicated):
        producer.push(2, Q, track=True, delay_s=5)  # every kind of push waits
    assert r.zcard(keys.delayed(Q)) == 1
    no_wait = Producer(make_client(settings, "producer", "t"))
    assert no_wait.push(3, Q).result == 2


def test_sentinel_settings_are_checked() -> None:
    s = Settings(sentinels=("127.0.0.1:26379", "::1:26380"), sentinel_master="bus",
                 redis_url="redis://user:secret@ignored:1/0")  # fmt: skip
    assert s.sentinel_addresses() == [("127.0.0.1", 26379), ("::1", 26380)]
    assert s.redis_url_redacted == "sentinel://127.0.0.1:26379,::1:26380/bus"
    for bad in (("localhost",), ("h:0",), ("h:port",)):
        with pytest.raises(SettingsError, match="BUS_SENTINELS"):
            Settings(sentinels=bad)
    with pytest.raises(SettingsError, match="BUS_WAIT_REPLICAS"):
        Settings(wait_replicas=-1)
