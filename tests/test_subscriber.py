"""The subscriber in-process: receives what is published, patterns, gap accounting, resubscribe."""

from __future__ import annotations

import time

import redis

from consumers.gaps import GapCounter, Verdict
from consumers.subscriber import Subscriber
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, keys, make_client
from producer.store.envelope import now_ms
from tests.inproc import running


def numsub(r: redis.Redis, channel: str = "default") -> int:
    return int(r.pubsub_numsub(keys.channel(channel))[0][1])


def test_publish_reaches_the_subscriber_and_receivers_is_right(
    settings: Settings, r: redis.Redis
) -> None:
    """With nobody listening PUBLISH reports 0 receivers; with one subscriber, 1, and it gets it."""
    producer = Producer(make_client(settings, "producer"))
    assert producer.publish("into the void").result == 0
    seen: list[Envelope] = []
    with running(Subscriber(settings, ["default"], [], "s1", seen.append)) as sub:
        sent = [producer.publish({"n": i}) for i in range(100)]
        wait_for(lambda: len(seen) >= 100, 10, "100 received")
        assert [s.result for s in sent] == [1] * 100
        assert [e.id for e in seen] == [s.envelope.id for s in sent]
        assert sub.stats.get("lost") == 0 and sub.stats.get("handled") == 100


def test_patterns_and_several_channels(settings: Settings, r: redis.Redis) -> None:
    """A pattern subscription receives every matching channel; others are not received."""
    settings = settings.replace(channels=("orders.eu", "orders.us", "audit"))
    producer = Producer(make_client(settings, "producer"))
    seen: list[Envelope] = []
    with running(Subscriber(settings, ["audit"], ["orders.*"], "s1", seen.append)):
        producer.publish("eu", "orders.eu")
        producer.publish("us", "orders.us")
        producer.publish("log", "audit")
        producer.publish("nobody", "other")
        wait_for(lambda: len(seen) >= 3, 5, "3 received")
        time.sleep(0.2)
    assert sorted(e.payload for e in seen) == ["eu", "log", "us"]


def test_client_kill_is_survived_and_the_gap_counted_exactly(
    settings: Settings, r: redis.Redis
) -> None:
    """CLIENT KILL TYPE pubsub mid-stream: the subscriber resubscribes; lost equals published
    minus received, exactly."""
    producer = Producer(make_client(settings, "producer"))
    seen: list[Envelope] = []
    with running(Subscriber(settings, ["default"], [], "s1", seen.append)) as sub:
        published = 0
        killed = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            producer.publish(published)
            published += 1
            time.sleep(0.002)
            if published == 300 and not killed:
                assert r.client_kill_filter(_type="pubsub") >= 1
                killed = True
            if killed and sub.stats.get("reconnects") >= 1 and published >= 600:
                break
        wait_for(lambda: seen and seen[-1].payload == published - 1, 5, "the last message")
        received = len(seen)
        assert sub.stats.get("reconnects") == 1
        assert sub.stats.get("lost") == published - received
        assert sub.stats.get("received") == received
        assert published - received > 0  # the kill really cost messages


def test_gap_counter_verdicts() -> None:
    """Jumps are losses, late arrivals cancel them, repeats are duplicates; per (src, channel)."""
    g = GapCounter()
    assert g.observe("p", "c", 5).lost == 0  # baseline: what came before was not ours
    assert g.observe("p", "c", 6).lost == 0
    assert g.observe("p", "c", 9).lost == 2
    late = g.observe("p", "c", 7)
    assert late.lost == -1 and late.out_of_order
    assert g.observe("p", "c", 7).duplicate
    assert g.observe("p", "c", 9).duplicate
    assert g.observe("p", "other", 100).lost == 0  # another channel is another stream
    assert g.observe("q", "c", 1).lost == 0  # a producer restart is a new src


def test_gap_counter_leaves_out_messages_without_src_or_seq() -> None:
    """A message without src/seq (src "" and seq 0) is neither a baseline, a loss nor a
    duplicate, however many arrive; sequenced streams are unaffected."""
    g = GapCounter()
    assert g.observe("", "c", 0) == Verdict()
    assert g.observe("", "c", 0) == Verdict()  # not a duplicate of the first
    assert g.observe("p", "c", 1) == Verdict()
    assert g.observe("", "c", 0) == Verdict()
    assert g.observe("p", "c", 3).lost == 1


def test_foreign_envelopes_are_received_without_latency_or_gaps(
    settings: Settings, r: redis.Redis
) -> None:
    """Minimal envelopes PUBLISHed by hand are handled as pubsub first deliveries; those without
    ts record no latency, those without src/seq count no gap and no duplicate."""
    seen: list[Envelope] = []
    minimal = '{"v":1,"id":"m%d","payload":null}'
    with running(Subscriber(settings, ["default"], [], "s1", seen.append)) as sub:
        for i in range(3):
            assert r.publish(keys.channel("default"), minimal % i) == 1
        stamped = '{"v":1,"id":"t","ts":' + str(now_ms()) + ',"src":"x","seq":1,"payload":0}'
        r.publish(keys.channel("default"), stamped)
        wait_for(lambda: len(seen) >= 4, 5, "4 received")
    assert [(e.id, e.mode, e.attempt) for e in seen] == [
        ("m0", "pubsub", 1),
        ("m1", "pubsub", 1),
        ("m2", "pubsub", 1),
        ("t", "pubsub", 1),
    ]
    assert sub.stats.get("handled") == 4 and sub.stats.get("dead_lettered") == 0
    assert (sub.stats.get("duplicates"), sub.stats.get("lost")) == (0, 0)
    assert sub.stats.snapshot()["lat_count"] == 1
