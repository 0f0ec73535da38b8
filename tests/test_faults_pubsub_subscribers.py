"""Pub/sub when the fault is in a subscriber: one too slow for the stream, cut off by Redis's
output buffer limit; one of three killed -9 and started again.

Processes, publishing and the exact accounting as in :mod:`tests.test_faults_pubsub_links`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from tests.procs import Proc
from tests.publisher import Attempt, Publisher, account, receives_after
from tests.subscriberkit import (
    SLOW_HANDLER,
    counter,
    final_stats,
    report,
    start_subscriber,
    stop_and_read,
    stop_cleanly,
    wait_received,
    wait_reconnected,
    wait_records,
    wait_subscribed,
)

pytestmark = pytest.mark.slow


def test_slow_subscriber_cut_off_by_the_output_buffer_limit(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """A subscriber slower than the stream (20 ms per message) behind a small pubsub output
    buffer limit: Redis cuts it off, it reconnects, and what the cut cost is counted exactly.

    Payloads are 16 KB rather than 2 KB: the kernel socket buffers on loopback hold ~4 MB before
    Redis's own buffer even starts to fill, and at 20 ms per message 2 KB messages would take
    ~40 s to drain; with 16 KB the same bytes are ~250 messages (~5 s)."""
    r = fresh_redis.client()
    r.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    sub = start_subscriber(spawn, fresh_redis.url, handler=SLOW_HANDLER,
                           TEST_BUS_HANDLER_SLEEP_S="0.02")  # fmt: skip
    records_path = tmp_path / "records.jsonl"
    wait_subscribed(r)
    pub = Publisher(fresh_redis.url, pad=16_000)
    # The burst: as fast as one connection goes, until Redis reports nobody heard a message
    # (it cut the subscriber off), then 100 more; at most 4000.
    cut: Attempt | None = None
    t_burst = time.time()
    for i in range(4000):
        a = pub.publish_one()
        assert a.outcome == "ok", a
        if cut is None and a.receivers == 0:
            cut = a
        if cut is not None and a.n >= cut.n + 100:
            break
        if i % 20 == 0:
            time.sleep(0.001)
    assert cut is not None, "Redis never cut the slow subscriber off"
    # It drains what the kernel had buffered, then meets the closed connection.
    lost = wait_reconnected(sub, t_burst, lost_within_s=20, back_after_lost=True)
    # A slow tail of small messages, well within its pace, so the last one is received.
    for _ in range(30):
        pub.publish_one(pad="")
        time.sleep(0.03)
    records, stats = stop_and_read(sub, r, records_path, pub.last_ok())

    assert pub.count("failed") == pub.count("unknown") == 0
    acc = account(pub, records, stats)
    assert counter(stats, "reconnects") >= 1
    assert acc.lost > 0, "the cut cost nothing?"
    first_post = receives_after(pub, records, lost.t_lost + 0.001, at_least=25)
    heard = {x["id"] for x in records}
    dropped_by_redis = sum(1 for a in pub.accepted() if a.receivers == 1 and a.id not in heard)
    report("slow subscriber, output buffer limit pubsub 64kb 32kb 1", cut_after_messages=cut.n,
           detection_after_cut=lost.t_lost - cut.t0,
           resubscribed_after_detection=lost.t_back - lost.t_lost,
           resume_after_detection=first_post["wall"] - lost.t_lost, published=acc.published,
           received=acc.received, lost=counter(stats, "lost"),
           lost_despite_receivers_1=dropped_by_redis,
           reconnects=counter(stats, "reconnects"))  # fmt: skip
    print(f"  {lost.lost_line}")


def test_fan_out_three_subscribers_one_killed_and_restarted(
    fresh_redis: RedisServer, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    """s1, s2, s3 on one channel; s1 is killed -9 mid-stream and started again. PUBLISH's
    receivers go 3...2...3 and nothing else; s2 and s3 receive every message; the new s1
    counts 0 lost and receives everything from its first message (the first publish that
    answered 3 again) on."""
    r = fresh_redis.client()
    paths = {n: tmp_path / f"records-{n}.jsonl" for n in ("s1", "s2", "s3")}
    procs = {
        n: start_subscriber(spawn, fresh_redis.url, n, TEST_BUS_RECORD=str(paths[n]))
        for n in ("s1", "s2", "s3")
    }
    wait_subscribed(r, 3)
    pub = Publisher(fresh_redis.url).start()
    try:
        for p in paths.values():
            wait_records(p, 100)
        old_s1 = procs["s1"]
        t_kill = time.time()
        old_s1.signal(signal.SIGKILL)
        assert old_s1.wait(5) == -signal.SIGKILL
        drop = wait_for(
            lambda: next((a for a in pub.accepted() if a.t0 > t_kill and a.receivers == 2), None),
            5, "a publish answering 2 receivers")  # fmt: skip
        time.sleep(0.3)
        t_spawn = time.time()
        new_s1 = start_subscriber(spawn, fresh_redis.url, "s1", TEST_BUS_RECORD=str(paths["s1"]))
        back = wait_for(
            lambda: next((a for a in pub.accepted() if a.t0 > t_spawn and a.receivers == 3), None),
            10, "a publish answering 3 receivers again")  # fmt: skip
        wait_for(lambda: len(pub.accepted()) >= back.n + 100, 10, "100 more publishes")
    finally:
        pub.stop()
    assert pub.count("failed") == pub.count("unknown") == 0
    accepted = pub.accepted()
    last = pub.last_ok()
    records = {n: wait_received(paths[n], last) for n in ("s2", "s3", "s1")}
    for n in ("s2", "s3"):
        stop_cleanly(procs[n])
    stop_cleanly(new_s1)

    # receivers: 3 ... 2 ... 3, nothing else; the 2s only between the kill and the restart
    runs: list[int] = []
    for a in accepted:
        if not runs or runs[-1] != a.receivers:
            runs.append(a.receivers)  # type: ignore[arg-type]
    assert runs == [3, 2, 3], f"receivers went {runs}"
    twos = [a for a in accepted if a.receivers == 2]
    assert twos[0].t1 > t_kill and twos[-1].t0 < back.t0 and back.t1 > t_spawn

    # the survivors: every message, in order, counted without loss
    all_ids = [a.id for a in accepted]
    for n in ("s2", "s3"):
        assert [x["id"] for x in records[n]] == all_ids, f"{n} missed messages"
        stats = final_stats(r, n)
        acc = account(pub, records[n], stats)
        assert acc.lost == 0 and counter(stats, "lost") == 0
        assert counter(stats, "reconnects") == 0

    # s1's first life: a prefix of the stream (what was in flight when it died is gone)
    first_life = [x for x in records["s1"] if x["pid"] == old_s1.pid]
    assert [x["id"] for x in first_life] == all_ids[: len(first_life)]
    # s1's second life: a fresh subscriber, baseline at its first message, which is the first
    # publish that counted it; from there on it has everything
    second_life = [x for x in records["s1"] if x["pid"] == new_s1.pid]
    assert len(first_life) + len(second_life) == len(records["s1"])
    assert second_life[0]["id"] == back.id
    assert [x["id"] for x in second_life] == all_ids[all_ids.index(back.id) :]
    stats = final_stats(r, "s1")
    assert int(stats["pid"]) == new_s1.pid
    acc = account(pub, second_life, stats)
    assert acc.lost == 0 and counter(stats, "lost") == 0
    receivers_3_missed = sum(1 for a in accepted[: drop.n] if a.receivers == 3 and a.t0 > t_kill)
    report("subscriber kill -9 and restart (3 subscribers)",
           redis_noticed_kill=drop.t0 - t_kill,
           publishes_still_counting_dead_s1=receivers_3_missed,
           resubscribed_after_spawn=back.t1 - t_spawn,
           resume_after_spawn=second_life[0]["wall"] - t_spawn, published=len(accepted),
           s1_first_life=len(first_life),
           s1_never_received=back.n - len(first_life),  # every attempt was accepted: n is the index
           s1_second_life=len(second_life), s1_new_lost=counter(stats, "lost"), s2_lost=0,
           s3_lost=0)  # fmt: skip
