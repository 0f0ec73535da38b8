"""A tracked message seen from outside: ``POST /prodcons`` with ``"track": true``,
``GET /api/messages/<id>``, ``python -m consumers message``, and the at-most-once worker."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from consumers.lists import QueueOps
from consumers.moves import ACK, tracked_how
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, decode, keys, make_client
from tests.procs import Proc
from tests.queuekit import AT_MOST_ONCE, start_workers
from tests.test_tools import cli
from tests.webapp import MakeApp, assert_json, post_json

Q = "default"


def handle_all(r: redis.Redis, result: bytes = b"") -> None:
    """Claim and ack every pending message, as a worker would (tracked ones with ``result``)."""
    ops = QueueOps(r, Q)
    for raw in ops.claim("w1", 100):
        env = decode(raw)
        ops.settle("w1", [(raw, result if env.track else b"", tracked_how(ACK, env))])


def test_post_track_and_get_the_record(make_app: MakeApp, settings: Settings,
                                       r: redis.Redis) -> None:  # fmt: skip
    c = make_app(settings).test_client()
    code, body = post_json(c, "/prodcons", {"payload": {"n": 1}, "track": True})
    assert code == 202 and body["tracked"] is True and body["depth"] == 1
    rec = assert_json(c.get(f"/api/messages/{body['id']}"))
    assert rec["state"] == "pending" and rec["queue"] == Q and rec["attempt"] == 1
    handle_all(r, b'{"total":3}')
    rec = assert_json(c.get(f"/api/messages/{body['id']}?queue={Q}"))
    assert rec["state"] == "handled" and rec["result"] == {"total": 3} and rec["final"] is True

    code, body = post_json(c, "/prodcons", {"payload": 2, "track": True, "delay_s": 60})
    assert code == 202 and body["tracked"] is True and body["scheduled"] == 1
    rec = assert_json(c.get(f"/api/messages/{body['id']}"))
    assert rec["state"] == "scheduled" and rec["due_ms"] == body["due_ms"]

    code, body = post_json(c, "/prodcons", {"payload": 3})
    assert code == 202 and "tracked" not in body
    resp = c.get(f"/api/messages/{body['id']}")  # not tracked: no record
    assert resp.status_code == 404 and "no record of message" in assert_json(resp)["error"]


def test_bad_requests_get_json_errors(make_app: MakeApp, settings: Settings) -> None:
    c = make_app(settings).test_client()
    for bad in ("yes", 1, [True]):  # null is the default: the queue decides
        code, body = post_json(c, "/prodcons", {"payload": 1, "track": bad})
        assert code == 400 and body["error"] == "'track' must be true or false", bad
    code, body = post_json(c, "/pubsub", {"payload": 1, "track": True})
    assert code == 400 and "unknown fields ['track']" in body["error"]
    resp = c.get("/api/messages/abc?queue=nope")
    assert resp.status_code == 404 and assert_json(resp)["allowed"] == [Q]
    resp = c.get("/api/messages/" + "x" * 300)
    assert resp.status_code == 400 and "1 to 256 characters" in assert_json(resp)["error"]
    resp = c.get("/api/messages/a%01b")
    assert resp.status_code == 400 and "control characters" in assert_json(resp)["error"]


def test_a_queue_configured_to_track_everything(make_app: MakeApp, settings: Settings) -> None:
    """BUS_TRACK_QUEUES: the fast path's answer says tracked, and the record is there."""
    c = make_app(settings.replace(track_queues=(Q,))).test_client()
    code, body = post_json(c, "/prodcons", {"payload": 1})
    assert code == 202 and body["tracked"] is True
    assert assert_json(c.get(f"/api/messages/{body['id']}"))["state"] == "pending"
    code, body = post_json(c, "/prodcons", {"payload": 1, "track": False})
    assert code == 202 and "tracked" not in body


def test_the_message_command(settings: Settings, r: redis.Redis) -> None:
    producer = Producer(make_client(settings, "producer", "t"))
    env = producer.push({"n": 1}, Q, track=True).envelope
    done = cli(settings, "message", env.id)
    assert done.returncode == 0, done.stderr
    assert "state:          pending" in done.stdout and f"id:             {env.id}" in done.stdout
    waited = cli(settings, "message", env.id, "--wait", "0.3")
    assert waited.returncode == 1 and "state:          pending" in waited.stdout  # not final
    handle_all(r, b"[1,2]")
    done = cli(settings, "message", env.id, "--json", "--queue", Q, "--wait", "5")
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    assert rec["state"] == "handled" and rec["result"] == [1, 2]
    missing = cli(settings, "message", "no-such-id")
    assert missing.returncode == 1 and "no record of message 'no-such-id'" in missing.stderr
    assert "message" in cli(settings, "--help").stdout


@pytest.mark.slow
def test_an_at_most_once_worker_keeps_the_record(
    r: redis.Redis, settings: Settings, spawn: Callable[..., Proc]
) -> None:
    start_workers(spawn, r, settings.redis_url, "w1", handler="tests.handlers_for_tests:work",
                  args=AT_MOST_ONCE)  # fmt: skip
    producer = Producer(make_client(settings, "producer", "t"))
    ok = producer.push({"result": "done"}, Q, track=True).envelope
    bad = producer.push({"fail": True}, Q, track=True).envelope

    def final(msg_id: str) -> dict | None:
        rec = r.hgetall(keys.record(Q, msg_id))
        return rec if rec.get(b"state") in (b"handled", b"dead") else None

    rec = wait_for(lambda: final(ok.id), 10, "handled")
    assert rec[b"state"] == b"handled" and rec[b"result"] == b'"done"'
    assert rec[b"worker"] == b"w1" and b"in_flight_ms" in rec
    rec = wait_for(lambda: final(bad.id), 10, "dead")
    assert rec[b"state"] == b"dead" and rec[b"attempt"] == b"1"
    assert rec[b"reason"].startswith(b"handler failed on attempt 1")
