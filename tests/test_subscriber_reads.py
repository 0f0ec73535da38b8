"""The subscriber reading in bulk: a reply longer than many reads, and stopping in the middle
of what one read brought."""

from __future__ import annotations

import time

import redis

from consumers.subscriber import Subscriber
from loadtest.harness.waits import wait_for
from producer import Envelope, Settings, keys
from producer.store import envelope
from tests.inproc import running


def test_a_message_of_megabytes_arrives_whole_among_small_ones(
    settings: Settings, r: redis.Redis
) -> None:
    """A reply far longer than one read is gathered over many reads, in order."""
    seen: list[Envelope] = []
    big = "x" * (6 << 20)
    with running(Subscriber(settings, ["default"], [], "s1", seen.append)) as sub:
        for seq, payload in enumerate(["before", big, "after"], 1):
            env = envelope.new(payload, src="p", seq=seq, mode="pubsub")
            assert r.publish(keys.channel("default"), env.encode()) == 1
        wait_for(lambda: len(seen) >= 3, 10, "3 received")
        assert [e.payload for e in seen] == ["before", big, "after"]
        assert sub.stats.get("lost") == 0 and sub.stats.get("handled") == 3


def test_stopping_mid_read_counts_as_received_only_what_was_handled(
    settings: Settings, r: redis.Redis
) -> None:
    """Messages read with others but not handled when the stop came are not counted as
    received: received stays what the handler was given."""
    seen: list[Envelope] = []

    def slow(env: Envelope) -> None:
        seen.append(env)
        time.sleep(0.05)

    sub = Subscriber(settings, ["default"], [], "s1", slow)
    with running(sub):
        pipe = r.pipeline(transaction=False)
        for seq in range(1, 101):  # one write: most of them come in one read
            env = envelope.new(seq, src="p", seq=seq, mode="pubsub")
            pipe.publish(keys.channel("default"), env.encode())
        pipe.execute()
        wait_for(lambda: len(seen) >= 3, 5, "3 handled")
    assert 3 <= len(seen) < 100
    assert sub.stats.get("received") == sub.stats.get("handled") == len(seen)
