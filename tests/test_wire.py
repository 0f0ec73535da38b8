"""Producing without Python: envelopes written from the README's "Wire format" alone, sent with
``redis-cli``, are handled by a worker and received by a subscriber like the project's own."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from consumers.worker import Worker
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, keys, make_client
from producer.store.envelope import now_ms
from tests.inproc import running
from tests.procs import Proc, read_records
from tests.test_envelope import wire_format_page

HANDLER = "tests.handlers_for_tests:record"
V2_REASON = "undecodable: unsupported envelope version 2; this consumer reads version 1"


def redis_cli(port: int, *args: str) -> str:
    """Run the redis-cli binary (not Python) against 127.0.0.1:``port``; its reply as text."""
    binary = shutil.which("redis-cli")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-cli is missing on CI: the bootstrap must install it")
        pytest.skip("redis-cli not installed (run `make test`, which installs it); not on CI")
    out = subprocess.run(
        [binary, "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


def readme_commands() -> list[list[str]]:
    """The README's ``redis-cli ...`` lines, as a shell would split them (without redis-cli and
    its connection options: the README's ``-p 6399 --user bus-web`` are make run's)."""
    lines = [x for x in wire_format_page().splitlines() if x.startswith("redis-cli ")]
    commands = []
    for line in lines:
        words = shlex.split(line)[1:]
        while words[0] in ("-p", "--user"):
            words = words[2:]
        commands.append(words)
    return commands


def stats_of(r: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


@pytest.mark.slow
def test_redis_cli_envelopes_are_handled_and_received_like_our_own(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """The README's minimal envelope, one with attempt 0 and one with unknown fields are handled
    by a worker (first attempts, FIFO) and received by a subscriber, with latency and gap
    accounting only where ts and src/seq allow; a v 2 envelope is dead-lettered by version."""
    port = redis_server.port
    lpush, publish = readme_commands()
    assert lpush[:2] == ["LPUSH", "bus:{default}:pending"]
    assert publish[:2] == ["PUBLISH", "bus:ch:default"]
    attempt0 = '{"v":1,"id":"cli-attempt-0","attempt":0,"payload":[1,2]}'

    def extra() -> str:  # unknown fields, and a ts so that latency is recorded
        return (
            '{"v":1,"id":"cli-extra","src":"newsroom","seq":2,"ts":' + str(now_ms()) + ","
            '"mode":"prodcons","trace":{"span":"ab12"},"weight":9,"payload":"x"}'
        )

    v2 = '{"v":2,"message_id":"cli-v2","body":{"order":42}}'
    producer = Producer(make_client(Settings(redis_url=redis_server.url), "producer"))

    # Queue: a backlog written by redis-cli (and one of our own), then a worker drains it.
    for envelope in (lpush[2], attempt0, v2, extra()):
        assert int(redis_cli(port, "LPUSH", "bus:{default}:pending", envelope)) >= 1
    own = producer.push({"own": True}).envelope
    spawn("worker", redis_server.url, "--name", "wire-w", "--handler", HANDLER,
          "--concurrency", "1", TEST_BUS_RECORD=str(tmp_path / "worker.jsonl"))  # fmt: skip
    handled = wait_for(lambda: len(x := read_records(tmp_path / "worker.jsonl")) >= 4 and x, 15,
                       "4 queue messages handled")  # fmt: skip
    assert [x["id"] for x in handled] == ["order-42", "cli-attempt-0", "cli-extra", own.id]
    assert [x["attempt"] for x in handled] == [1, 1, 1, 1]
    assert [x["payload"] for x in handled] == [{"order": 42}, [1, 2], "x", {"own": True}]
    assert r.llen(keys.pending("default")) == 0
    wait_for(lambda: r.llen(keys.processing("default", "wire-w")) == 0, 5, "acknowledged")
    (dead,) = [json.loads(x) for x in r.lrange(keys.dead("default"), 0, -1)]
    assert dead["reason"] == V2_REASON and dead["raw"] == v2
    worker_stats = "bus:{stats}:worker:default:wire-w"
    wait_for(lambda: stats_of(r, worker_stats).get("handled") == "4", 5, "worker stats")
    assert stats_of(r, worker_stats)["lat_count"] == "2"  # only the two with a ts

    # Channel: a subscriber listening, then redis-cli publishes (and so do we).
    spawn("subscriber", redis_server.url, "--channel", "default", "--name", "wire-s",
          "--handler", HANDLER, TEST_BUS_RECORD=str(tmp_path / "subscriber.jsonl"))  # fmt: skip
    wait_for(lambda: r.pubsub_numsub(keys.channel("default"))[0][1] == 1, 10, "subscribed")
    for envelope in (publish[2], attempt0, attempt0, v2, extra()):
        assert redis_cli(port, "PUBLISH", "bus:ch:default", envelope) == "1"
    ours = producer.publish({"own": True}).envelope
    received = wait_for(lambda: len(x := read_records(tmp_path / "subscriber.jsonl")) >= 5 and x,
                        10, "5 channel messages received")  # fmt: skip
    ids = ["news-1", "cli-attempt-0", "cli-attempt-0", "cli-extra", ours.id]
    assert [x["id"] for x in received] == ids
    assert [x["attempt"] for x in received] == [1] * 5
    assert [(x["src"], x["seq"]) for x in received[:4]] == [
        ("newsroom", 1),
        ("", 0),
        ("", 0),
        ("newsroom", 2),
    ]
    (dead,) = [json.loads(x) for x in r.lrange(keys.channel_dead("default"), 0, -1)]
    assert dead["reason"] == V2_REASON and dead["raw"] == v2
    sub_stats = "bus:{stats}:subscriber:wire-s"
    wait_for(lambda: stats_of(r, sub_stats).get("handled") == "5", 5, "subscriber stats")
    got = stats_of(r, sub_stats)
    # The two src-less messages are no duplicate of each other, and newsroom 1, 2 has no gap.
    assert (got["lost"], got["duplicates"], got["out_of_order"]) == ("0", "0", "0")
    assert got["lat_count"] == "2"  # only the two with a ts


def test_worker_records_no_latency_without_ts_and_retries_foreign_envelopes(
    settings: Settings, r: redis.Redis
) -> None:
    """A ts-less envelope records no latency; one that fails is retried as attempt 2 (written
    again without the src, seq and ts it never had, so it still decodes), in the queue's mode."""
    r.lpush(keys.pending("default"), '{"v":1,"id":"no-ts","payload":1,"extra":true}')
    r.lpush(
        keys.pending("default"), '{"v":1,"id":"with-ts","ts":' + str(now_ms()) + ',"payload":2}'
    )
    seen: list[Envelope] = []

    def fail_once(env: Envelope) -> None:
        seen.append(env)
        if env.id == "no-ts" and env.attempt == 1:
            raise RuntimeError("once")

    worker = Worker(settings.replace(concurrency=1), "default", "w1", fail_once)
    with running(worker):
        wait_for(lambda: len(seen) >= 3, 10, "3 deliveries")
    assert [(e.id, e.attempt) for e in seen] == [("no-ts", 1), ("with-ts", 1), ("no-ts", 2)]
    assert {e.mode for e in seen} == {"prodcons"}
    assert worker.stats.get("handled") == 2 and r.llen(keys.dead("default")) == 0
    assert worker.stats.snapshot()["lat_count"] == 1  # only the delivery with a ts
