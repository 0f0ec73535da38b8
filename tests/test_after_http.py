"""``"after"`` over HTTP and what the tools show of waiting messages: the 202 says how many a
message waits for, bad input is a 4xx JSON answer that sends nothing, and ``/api/stats``,
``/metrics``, ``consumers status`` and ``consumers message`` show the waiting ones."""

from __future__ import annotations

import jsonschema
import redis
from flask.testing import FlaskClient

from loadtest.harness.server import RedisServer
from producer import Producer, Settings, keys
from producer.store.tracking import read_record
from tests.procs import project_env, run_cli
from tests.test_status import rows_of
from tests.webapp import assert_json
from web.openapi import describe

Q = "default"


def test_post_prodcons_with_after_waits_and_answers_how_many_it_waits_for(
    client: FlaskClient, settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    a, b = (s.envelope.id for s in producer.push_many(["a", "b"], track=True))
    resp = client.post("/prodcons", json={"payload": "w", "after": [a, {"queue": Q, "id": b}],
                                          "priority": 4})  # fmt: skip
    assert resp.status_code == 202, resp.get_data(as_text=True)
    answer = assert_json(resp)
    schema = describe(settings)["components"]["schemas"]["Pushed"]
    jsonschema.validate(answer, schema)
    assert (answer["waiting_for"], answer["tracked"], answer["queue"]) == (2, True, Q)
    record = read_record(r, Q, answer["id"])
    assert record is not None and record["state"] == "waiting"
    assert record["after"] == [{"queue": Q, "id": a}, {"queue": Q, "id": b}]
    stats = assert_json(client.get("/api/stats"))
    assert stats["queues"][Q]["waiting"] == 1 and stats["queues"][Q]["balance"]["waiting"] == 1
    assert 'bus_queue_waiting{queue="default"} 1.0' in client.get("/metrics").get_data(True)
    shown = assert_json(client.get(f"/api/messages/{answer['id']}"))
    assert (shown["state"], shown["waiting_for"]) == ("waiting", 2)


def test_bad_after_is_refused_and_sends_nothing(
    client: FlaskClient, settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    tracked = producer.push("t", track=True).envelope.id
    plain = producer.push("p").envelope.id
    before = sorted(r.keys("bus:{default}:*"))
    resp = client.post("/prodcons", json={"payload": 1, "after": [tracked, plain]})
    assert resp.status_code == 404
    body = assert_json(resp)
    assert body["missing"] == [{"queue": Q, "id": plain}] and "no record" in body["error"]
    for sent, said in [
        ({"after": "abc"}, "must be a list"),
        ({"after": []}, "names no message"),
        ({"after": [7]}, "is not a message"),
        ({"after": [{"id": tracked, "queue": "nope"}]}, "unknown queue 'nope'"),
        ({"after": [{"id": tracked, "extra": 1}]}, "is not a message"),
        ({"after": ["x" * 300]}, "1 to 256 characters"),
        ({"after": [tracked], "delay_s": 5}, "cannot be combined"),
        ({"after": [tracked], "not_before": 5}, "cannot be combined"),
        ({"after": [tracked], "track": False}, "is tracked"),
    ]:
        resp = client.post("/prodcons", json={"payload": 1, **sent})
        assert resp.status_code == 400, (sent, resp.get_data(as_text=True))
        assert said in assert_json(resp)["error"], (sent, assert_json(resp))
    published = client.post("/pubsub", json={"payload": 1, "after": [tracked]})
    assert published.status_code == 400
    assert "only a queue message" in assert_json(published)["error"]
    assert sorted(r.keys("bus:{default}:*")) == before


def test_the_tools_show_waiting_messages(
    redis_server: RedisServer, settings: Settings, r: redis.Redis
) -> None:
    producer = Producer.from_settings(settings)
    members = producer.group(["m1", "m2", "m3"], then="report")
    assert members.callback is not None
    cb = members.callback.envelope.id
    env = project_env(redis_server.url)
    shown = run_cli("message", cb, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "state:          waiting" in shown.stdout and "waiting_for:    3" in shown.stdout
    first = members.members[0].envelope.id
    assert f"after:          3: {first} on default," in shown.stdout
    status = run_cli("status", env=env)
    row = rows_of(status.stdout, "QUEUES")[0]
    assert (row["queue"], row["depth"], row["waiting"]) == ("default", "3", "1"), status.stdout
    cancelled = run_cli("message", "cancel", cb, env=env)
    assert cancelled.returncode == 0 and "(queue default, waiting): cancelled" in cancelled.stdout
    assert r.zcard(keys.waiting(Q)) == 0 and not r.exists(keys.wait(Q, cb))


def test_an_idempotency_key_sends_a_waiting_message_once(
    client: FlaskClient, settings: Settings, r: redis.Redis
) -> None:
    """A retried POST with the same key and body answers the first 202 with "repeat"; with
    another body (here: another prerequisite) it is a 409; nothing more waits."""
    producer = Producer.from_settings(settings)
    a, b = (s.envelope.id for s in producer.push_many(["a", "b"], track=True))
    headers = {"Idempotency-Key": "report-2026-12-08"}
    first = client.post("/prodcons", json={"payload": "r", "after": [a]}, headers=headers)
    again = client.post("/prodcons", json={"payload": "r", "after": [a]}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert assert_json(again) == {**assert_json(first), "repeat": True}
    other = client.post("/prodcons", json={"payload": "r", "after": [b]}, headers=headers)
    assert other.status_code == 409
    assert r.zcard(keys.waiting(Q)) == 1 and r.hget(keys.counts(Q), "pushed") == b"3"
