"""The reaper, dead-letter tools (CLI and HTTP), worker --check, stopping mid-batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from consumers.lists import QueueOps
from consumers.worker import Worker
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, decode, keys, make_client
from producer.store.deadletters import dead_entry
from producer.store.envelope import now_ms
from tests.inproc import running
from tests.procs import ROOT
from web import create_app


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update({"BUS_REDIS_URL": settings.redis_url, "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "consumers", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env=env)  # fmt: skip


def claim_as(r: redis.Redis, consumer: str, n: int) -> None:
    for _ in range(n):
        r.lmove(keys.pending("default"), keys.processing("default", consumer), "RIGHT", "LEFT")


@pytest.mark.slow
def test_reaper_once_requeues_only_expired_workers(settings: Settings, r: redis.Redis) -> None:
    """A worker silent past the TTL loses its in-flight messages to pending (oldest next,
    attempt + 1) and its registry entry; a live one keeps both."""
    sent = Producer(make_client(settings, "producer")).push_many(["a", "b", "c", "d"])
    claim_as(r, "dead-one", 3)
    claim_as(r, "live-one", 1)
    r.zadd(keys.consumers("default"), {"dead-one": now_ms() - 60_000, "live-one": now_ms()})
    out = cli(settings, "reaper", "--once")
    assert out.returncode == 0, out.stderr
    assert "reaped dead-one: requeued 3" in out.stdout
    pending = [decode(x) for x in r.lrange(keys.pending("default"), 0, -1)]
    assert [e.payload for e in reversed(pending)] == ["a", "b", "c"]  # tail = popped next
    assert {e.attempt for e in pending} == {2}
    assert [e.id for e in reversed(pending)] == [s.envelope.id for s in sent[:3]]
    assert r.zscore(keys.consumers("default"), "dead-one") is None
    assert r.llen(keys.processing("default", "live-one")) == 1
    assert r.zscore(keys.consumers("default"), "live-one") is not None


def test_reaper_leaves_a_worker_that_came_back(settings: Settings, r: redis.Redis) -> None:
    """The reaper found the worker silent, but its heartbeat is fresh again when the reaping
    script runs: the script's own check leaves everything of that worker where it is."""
    Producer(make_client(settings, "producer")).push("x")
    claim_as(r, "w", 1)
    r.zadd(keys.consumers("default"), {"w": now_ms() - 60_000})
    ops = QueueOps(r, "default")
    assert ops.stale(settings.heartbeat_ttl_s) == ["w"]  # the reaper's first look
    assert ops.heartbeat("w", "its-token", settings.heartbeat_ttl_s)  # back, before the script
    assert ops.reap_consumer("w", settings.heartbeat_ttl_s) is None  # the script said alive
    assert r.llen(keys.processing("default", "w")) == 1
    assert r.zscore(keys.consumers("default"), "w") is not None


@pytest.mark.slow
def test_worker_check_is_a_liveness_probe(settings: Settings, r: redis.Redis) -> None:
    """--check exits 1 with no live worker, 0 while one heartbeats."""
    assert cli(settings, "worker", "--check").returncode == 1
    with running(Worker(settings, "default", "w", lambda env: None)):
        out = cli(settings, "worker", "--check")
        assert out.returncode == 0 and "1 live worker" in out.stdout
    assert cli(settings, "worker", "--check").returncode == 1  # it left the registry


@pytest.mark.slow
def test_dead_cli_list_requeue_purge(settings: Settings, r: redis.Redis) -> None:
    """Dead letters are listed readable, requeued as first attempts (garbage stays), purged."""
    env = decode(
        Producer(make_client(settings, "producer")).push("x").envelope.next_attempt().encode()
    )
    r.delete(keys.pending("default"))
    r.lpush(keys.dead("default"), dead_entry(env.encode(), "handler failed", queue="default"))
    r.lpush(keys.dead("default"), dead_entry(b"\xffjunk", "undecodable", queue="default"))
    listed = cli(settings, "dead", "list")
    lines = [json.loads(x) for x in listed.stdout.splitlines()]
    assert listed.returncode == 0 and len(lines) == 2 and lines[0]["reason"] == "undecodable"
    assert "T" in lines[1]["at"]  # ISO time
    requeued = cli(settings, "dead", "requeue")
    assert "requeued 1; kept 1" in requeued.stdout
    back = decode(r.lindex(keys.pending("default"), 0))
    assert (back.id, back.attempt) == (env.id, 1)
    assert cli(settings, "dead", "purge").returncode == 1  # refuses without --yes
    assert r.llen(keys.dead("default")) == 1
    assert "purged 1" in cli(settings, "dead", "purge", "--yes").stdout
    assert r.llen(keys.dead("default")) == 0


def test_dead_letter_http_api(settings: Settings, r: redis.Redis) -> None:
    """GET lists dead letters, POST requeues them; unknown queue 404, bad count 400."""
    producer = Producer(make_client(settings, "producer"))
    envs = [s.envelope for s in producer.push_many([1, 2, 3])]
    r.delete(keys.pending("default"))
    for e in envs:
        r.lpush(keys.dead("default"), dead_entry(e.encode(), "boom", queue="default"))
    app = create_app(settings)
    try:
        client = app.test_client()
        page = client.get("/api/queues/default/dead?count=2")
        assert (
            page.status_code == 200 and page.json["total"] == 3 and len(page.json["entries"]) == 2
        )
        assert client.get("/api/queues/nope/dead").status_code == 404
        assert client.get("/api/queues/default/dead?count=x").status_code == 400
        assert client.post("/api/queues/default/dead/requeue", json={"count": 0}).status_code == 400
        done = client.post("/api/queues/default/dead/requeue", json={"count": 2})
        assert done.status_code == 200 and done.json["requeued"] == 2
        assert client.post("/api/queues/default/dead/requeue").json["requeued"] == 1
        pending = [decode(x) for x in r.lrange(keys.pending("default"), 0, -1)]
        assert [e.id for e in reversed(pending)] == [e.id for e in envs]  # oldest first again
    finally:
        app.extensions["bus"].close()


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_stop_mid_batch_gives_the_rest_back_in_order(
    delivery: str, settings: Settings, r: redis.Redis
) -> None:
    """Stopping while a batch is in hand: the message in hand finishes, the rest go back to the
    consuming end unchanged (same bytes, same attempt), in their order."""
    settings = settings.replace(delivery=delivery, batch_size=50, concurrency=1)
    sent = [
        s.envelope for s in Producer(make_client(settings, "producer")).push_many(list(range(20)))
    ]
    seen: list[Envelope] = []
    worker = Worker(settings, "default", "w", lambda env: None)

    def handler(env: Envelope) -> None:
        seen.append(env)
        if len(seen) == 3:
            worker.stop()

    worker.handler = handler
    with running(worker):
        wait_for(lambda: worker.stopping.is_set(), 5, "the stop")
    assert [e.payload for e in seen] == [0, 1, 2]
    rest = [decode(x) for x in reversed(r.lrange(keys.pending("default"), 0, -1))]
    assert [e.id for e in rest] == [e.id for e in sent[3:]]
    assert {e.attempt for e in rest} == {1}
    assert r.keys(keys.processing_prefix("default") + "*") == []
