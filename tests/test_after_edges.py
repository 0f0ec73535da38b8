"""Messages that wait for others at the edges: a race between the push and its prerequisite's
settle, Redis out of memory, and a Redis Cluster (every step on one slot). The plain cases and
the handlers that misbehave are in tests/test_after.py; kills and restarts with real processes
in tests/test_faults_after.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumers.worker import Worker
from loadtest.harness.cluster import RedisCluster
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, Step, keys
from producer.store.tracking import read_record
from tests.clusterkit import bus_settings, queues_on_shards, start_cluster
from tests.inproc import running
from tests.test_after import Handled, Q, balanced, state
from tests.test_worker import make_worker


def test_messages_pushed_while_their_prerequisite_finishes_all_go_out_at_once(
    settings: Settings, r: redis.Redis
) -> None:
    """200 pushes with ``after`` a message whose handler finishes in the middle of them: each
    either links before the settle (told by it) or finds it handled (pending at once). None
    is left for the 30 s sweep; the same envelope bytes pushed twice by another producer are
    handled twice, and still tell nothing twice."""
    producer = Producer.from_settings(settings)
    p = producer.push("slow", track=True)
    seen: list[Any] = []

    def handler(env: Envelope) -> Any:
        if env.payload == "slow":
            time.sleep(0.05)
        seen.append(env.payload)
        return env.payload

    with running(make_worker(settings, handler)):
        waiting = [producer.push(i, after=[p]) for i in range(200)]
        wait_for(lambda: len(seen) >= 201, 5, "every waiting message, without a sweep")
        assert {w.result for w in waiting} <= {0, 1} and r.zcard(keys.waiting(Q)) == 0
        group = producer.group(["m"], then="cb")
        r.lpush(keys.pending(Q), group.members[0].envelope.encode())  # the same bytes again
        wait_for(lambda: seen.count("m") == 2 and "cb" in seen, 5, "m twice, then cb")
        time.sleep(0.3)
    assert seen.count("cb") == 1
    assert sorted(x for x in seen if isinstance(x, int)) == list(range(200))


def test_out_of_memory_nothing_is_half_written(settings: Settings, r: redis.Redis) -> None:
    """Redis at ``maxmemory`` (noeviction) refuses every script that starts a chain or a group,
    keeps a message aside, pushes at a level or cancels: each raises, none writes anything;
    once memory is back the same calls work and every message is accounted for."""
    producer = Producer.from_settings(settings)
    a = producer.push("a", track=True)
    before = {k: r.dump(k) for k in r.keys("bus:{default}:*")}
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)
    try:
        for call in (
            lambda: producer.push("w", after=[a]),
            lambda: producer.chain(["x", "y"]),
            lambda: producer.group(["m1", "m2"], then="cb"),
            lambda: producer.push("p", priority=5),
            lambda: producer.cancel(a.envelope.id),
        ):
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                call()
        assert {k: r.dump(k) for k in r.keys("bus:{default}:*")} == before
    finally:
        r.config_set("maxmemory", 0)
    w = producer.push("w", after=[a])
    handler = Handled()
    with running(make_worker(settings, handler)):
        wait_for(lambda: len(handler.seen) >= 2, 5, "a, then w")
    assert handler.results["w"] == [{"done": "a"}] and state(r, w.envelope.id) == "handled"
    b = balanced(r)[Q]
    assert (b["pushed"], b["acked"]) == (2, 2)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    yield from start_cluster(tmp_path / "cluster")


@pytest.mark.slow
def test_chains_and_groups_across_the_shards_of_a_cluster(cluster: RedisCluster) -> None:
    """A queue on each of 3 shards: every step runs on one slot (keep aside, link, tell,
    resolve), so a chain through the three queues, a group on two with its callback on the
    third, and a cancel that ends a message waiting on another shard all work."""
    q0, q1, q2 = queues_on_shards(cluster, 3)
    settings = bus_settings(cluster, queues=(q0, q1, q2))
    handlers = {q: Handled() for q in (q0, q1, q2)}
    with Producer.from_settings(settings, name="t") as producer:
        chain = producer.chain([Step("c0", q0), Step("c1", q1), Step("c2", q2)])
        group = producer.group([Step(f"g{i}", (q0, q1)[i % 2]) for i in range(6)],
                               then=Step("callback", q2))  # fmt: skip
        blocker = producer.push("blocker", q0, delay_s=60, track=True).envelope.id
        doomed = producer.push("doomed", q2, after=[(q0, blocker)]).envelope.id
        workers = [Worker(settings, q, "w", handlers[q]) for q in (q0, q1, q2)]
        with running(workers[0]), running(workers[1]), running(workers[2]):
            wait_for(lambda: len(handlers[q2].seen) >= 2, 10, "the chain's end and the callback")
            assert producer.cancel(blocker, q0).outcome == "cancelled"  # type: ignore[union-attr]
            r = producer.client
            assert (read_record(r, q2, doomed) or {}).get("state") == "cancelled"
            assert group.callback is not None
            cb = read_record(r, q2, group.callback.envelope.id)
            assert cb is not None and cb["state"] in ("in-flight", "handled")
    assert sorted(handlers[q2].payloads()) == ["c2", "callback"]
    assert handlers[q1].results["c1"] == [{"done": "c0"}]
    assert handlers[q2].results["c2"] == [{"done": "c1"}]
    assert handlers[q2].results["callback"] == [{"done": f"g{i}"} for i in range(6)]
    assert [s.envelope.id for s in chain][2] in {e.id for e in handlers[q2].seen}


def test_a_long_chain_ends_step_after_step_without_recursion(
    settings: Settings, r: redis.Redis
) -> None:
    """A chain of 1,200 steps whose first is dead-lettered: each step ends the next one in turn
    (one outbox after another, in a loop), all of them dead with their reason, in one drain."""
    producer = Producer.from_settings(settings)
    steps = [s.envelope.id for s in producer.chain(["boom"] + ["never"] * 1199)]
    handler = Handled(fail={"boom"})
    with running(make_worker(settings.replace(max_attempts=1), handler)):
        wait_for(lambda: state(r, steps[-1]) == "dead", 20, "the last step ended")
    assert handler.payloads() == ["boom"]
    assert r.llen(keys.dead(Q)) == 1200 and r.zcard(keys.waiting(Q)) == 0
    assert balanced(r)[Q]["dead"] == 1200
