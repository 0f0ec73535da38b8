"""A foreign producer's out-of-range accounting fields do not cost it its work.

Envelopes written by hand, as another language would write them, whose optional accounting
fields (``src``, ``seq``, ``ts``, ``attempt``), or whose time limit (``timeout_s``), are out of
range or of the wrong type: a real worker process and a real subscriber process hand them to
the handler as first deliveries (without a time limit of their own), leave them out of the gap
accounting and the latency, count them (``fields_ignored``) and warn about them at most once a
minute. What cannot be handled (another ``v``, no ``payload``) is
still dead-lettered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import keys
from tests.procs import Proc, read_records

pytestmark = pytest.mark.slow

HANDLER = "tests.handlers_for_tests:record"
# (id, the accounting fields as a foreign producer wrote them)
ODD: list[tuple[str, dict[str, Any]]] = [
    ("seq-zero", {"src": "billing", "seq": 0}),
    ("seq-negative", {"src": "billing", "seq": -5}),
    ("seq-string", {"src": "billing", "seq": "7"}),
    ("src-alone", {"src": "billing"}),
    ("ts-negative", {"ts": -1}),
    ("ts-string", {"ts": "abc"}),
    ("attempt-negative", {"attempt": -2}),
    ("timeout-zero", {"timeout_s": 0}),  # the worker's BUS_HANDLER_TIMEOUT_S applies instead
    ("timeout-string", {"timeout_s": "30"}),
    ("timeout-past-7-days", {"timeout_s": 604801}),
]
# Cannot be handled: dead-lettered as before.
UNHANDLEABLE = [
    b'{"v":2,"id":"v-two","payload":1}',
    b'{"v":1,"id":"no-payload","src":"billing","seq":0}',
]


def raw(env_id: str, fields: dict[str, Any], n: int) -> bytes:
    return json.dumps({"v": 1, "id": env_id, **fields, "payload": {"n": n}}).encode()


def stats_of(r: redis.Redis, key: str) -> dict[str, str]:
    def text(x: bytes | str) -> str:
        return x.decode() if isinstance(x, bytes) else x

    return {text(k): text(v) for k, v in r.hgetall(key).items()}


def warnings_about_ignored_fields(proc: Proc) -> list[str]:
    return [x for x in proc.log().splitlines() if "WARNING" in x and "ignored" in x]


def test_a_worker_process_handles_out_of_range_accounting_fields(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """Each odd envelope LPUSHed raw is handled once, as attempt 1, without src/seq; the two
    that cannot be handled are dead-lettered; fields_ignored counts the odd ones; one WARNING."""
    proc = spawn("worker", redis_server.url, "--name", "w", "--handler", HANDLER,
                 "--concurrency", "1")  # fmt: skip
    wait_for(lambda: r.zscore(keys.consumers("default"), "w"), 15, "worker heartbeat")
    for n, (env_id, fields) in enumerate(ODD):
        r.lpush(keys.pending("default"), raw(env_id, fields, n))
    for junk in UNHANDLEABLE:
        r.lpush(keys.pending("default"), junk)
    records = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(records)) >= len(ODD), 15, "the odd envelopes handled")
    stats_key = keys.stats("worker", "default:w")
    wait_for(lambda: r.llen(keys.dead("default")) == len(UNHANDLEABLE), 10, "dead letters")
    wait_for(lambda: stats_of(r, stats_key).get("handled") == str(len(ODD)), 10, "stats")
    got = read_records(records)
    assert [x["id"] for x in got] == [env_id for env_id, _ in ODD]  # FIFO, each once
    assert {(x["src"], x["seq"], x["attempt"]) for x in got} == {("", 0, 1)}
    stats = stats_of(r, stats_key)
    assert stats["fields_ignored"] == str(len(ODD)), stats
    assert stats["dead_lettered"] == str(len(UNHANDLEABLE)) and stats.get("lat_count") == "0"
    dead = [json.loads(e) for e in r.lrange(keys.dead("default"), 0, -1)]
    assert all(e["reason"].startswith("undecodable") for e in dead), dead
    assert len(warnings_about_ignored_fields(proc)) == 1, proc.log()  # rate-limited
    assert "seq-zero" in warnings_about_ignored_fields(proc)[0]
    assert proc.stop() == 0, proc.log()


def test_a_subscriber_process_handles_out_of_range_accounting_fields(
    spawn: Callable[..., Proc], redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """Published raw between a producer's seq 1 and 2, the odd envelopes are handled and
    counted in fields_ignored; the gap accounting sees 1, 2 and nothing lost or repeated."""
    proc = spawn("subscriber", redis_server.url, "--name", "s", "--handler", HANDLER)
    channel = keys.channel("default")
    wait_for(lambda: r.pubsub_numsub(channel)[0][1] == 1, 15, "subscribed")
    r.publish(channel, raw("first", {"src": "billing", "seq": 1}, -1))
    for n, (env_id, fields) in enumerate(ODD):
        r.publish(channel, raw(env_id, fields, n))
    r.publish(channel, raw("second", {"src": "billing", "seq": 2}, -2))
    for junk in UNHANDLEABLE:
        r.publish(channel, junk)
    records = tmp_path / "records.jsonl"
    wait_for(lambda: len(read_records(records)) >= len(ODD) + 2, 15, "every envelope handled")
    stats_key = keys.stats("subscriber", "s")
    dead_key = keys.channel_dead("default")
    wait_for(lambda: r.llen(dead_key) == len(UNHANDLEABLE), 10, "dead letters")
    wait_for(lambda: stats_of(r, stats_key).get("handled") == str(len(ODD) + 2), 10, "stats")
    got = read_records(records)
    assert [x["id"] for x in got] == ["first", *(env_id for env_id, _ in ODD), "second"]
    assert [(x["src"], x["seq"]) for x in got[1:-1]] == [("", 0)] * len(ODD)
    stats = stats_of(r, stats_key)
    assert stats["fields_ignored"] == str(len(ODD)), stats
    for counter in ("lost", "duplicates", "out_of_order"):
        assert stats[counter] == "0", (counter, stats)
    assert len(warnings_about_ignored_fields(proc)) == 1, proc.log()
    assert proc.stop() == 0, proc.log()
