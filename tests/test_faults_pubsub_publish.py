"""The contract the pub/sub accounting rests on (:mod:`tests.publisher`): a publish whose reply
was lost is an unknown outcome, never resent, and its sequence number is never reused.

A proxy (:class:`tests.proxies.ReplyDroppingProxy`) cuts the producer's link right after Redis
ran the PUBLISH, to prove the distinction from a publish that never ran.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from tests.procs import Proc
from tests.proxies import ReplyDroppingProxy
from tests.publisher import Publisher
from tests.subscriberkit import counter, report, start_subscriber, stop_and_read, wait_subscribed

pytestmark = pytest.mark.slow


def test_a_publish_whose_reply_was_lost_is_unconfirmed_not_retried(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """The producer's link breaks after Redis ran the PUBLISH and before the reply came back (a
    network cut, a proxy or a CLIENT KILL at the wrong moment). The publish raises Unconfirmed
    (unknown outcome), is never resent (pub/sub is at-most-once: no message delivered twice),
    its sequence number is not reused (one seq never names two messages), and the subscriber's
    accounting stays exact: it received the message, so nothing is counted lost."""
    r = fresh_redis.client()
    sub = start_subscriber(spawn, fresh_redis.url)
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    proxy = ReplyDroppingProxy(fresh_redis.port)
    try:
        pub = Publisher(proxy.url)
        for _ in range(5):
            assert pub.publish_one().outcome == "ok"
        proxy.armed.set()
        victim = pub.publish_one()
        proxy.armed.clear()
        for _ in range(5):
            assert pub.publish_one().outcome == "ok"
    finally:
        proxy.close()
    assert victim.outcome == "unknown", victim  # it raised Unconfirmed
    records, stats = stop_and_read(sub, r, records_path, pub.last_ok())

    victim_deliveries = sum(1 for x in records if x["payload_n"] == victim.n)
    ids_by_seq: dict[int, set[str]] = {}
    for x in records:
        ids_by_seq.setdefault(x["seq"], set()).add(x["id"])
    shared = {seq: len(ids) for seq, ids in ids_by_seq.items() if len(ids) > 1}
    report("PUBLISH ran but its reply was lost (Unconfirmed)", replies_dropped=proxy.dropped,
           publish_raised=victim.error, delivered_to_s1=victim_deliveries,
           seqs_naming_several_messages=shared, duplicates_counted=counter(stats, "duplicates"),
           lost_counted=counter(stats, "lost"))  # fmt: skip
    assert victim_deliveries == 1, "sent once, never resent"
    assert len({x["id"] for x in records}) == len(records), "pub/sub is at-most-once"
    assert not shared, f"one seq named several distinct messages: {shared}"
    assert counter(stats, "duplicates") == 0 and counter(stats, "lost") == 0
    assert [x["seq"] for x in records] == list(range(1, len(records) + 1))
