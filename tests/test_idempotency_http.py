"""``Idempotency-Key`` on ``POST /prodcons``: a push at most once per key within its window.

- A repeat answers 202 with the first push's answer (its id, depth or schedule) and
  ``"repeat": true``, and sends nothing; the key with another body answers 409 JSON naming it.
- 20 clients racing with one key through gunicorn: one push, every answer the same id.
- ``POST /pubsub`` the same: one message reaches the subscriber, however often it is retried.
- A key that is empty, too long or not printable ASCII: 400 JSON naming the header, nothing
  sent.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
import requests
from flask.testing import FlaskClient

from loadtest.harness.server import RedisServer
from producer import keys
from tests.webapp import assert_json, start_gunicorn

PENDING = keys.pending("default")


def post(
    c: FlaskClient, body: object, key: str | None, path: str = "/prodcons"
) -> tuple[int, dict]:
    headers = {} if key is None else {"Idempotency-Key": key}
    resp = c.post(path, json=body, headers=headers)
    return resp.status_code, assert_json(resp)


def test_a_repeat_answers_the_first_push_and_sends_nothing(
    client: FlaskClient, r: redis.Redis
) -> None:
    code, first = post(client, {"payload": {"order": 7}}, "order-7")
    assert code == 202 and "repeat" not in first and first["depth"] == 1
    code, again = post(client, {"payload": {"order": 7}}, "order-7")
    assert code == 202 and again == {**first, "repeat": True}
    assert r.llen(PENDING) == 1
    code, later = post(client, {"payload": 1, "delay_s": 60, "track": True}, "report")
    code_again, later_again = post(client, {"payload": 1, "delay_s": 60, "track": True}, "report")
    assert (code, code_again) == (202, 202) and later_again == {**later, "repeat": True}
    assert (
        later["scheduled"] == 1
        and later["tracked"] is True
        and r.zcard(keys.delayed("default")) == 1
    )


def test_the_key_with_another_body_is_409(client: FlaskClient, r: redis.Redis) -> None:
    post(client, {"payload": {"order": 7}}, "order-7")
    code, body = post(client, {"payload": {"order": 8}}, "order-7")
    assert code == 409 and body["status"] == 409 and body["key"] == "order-7"
    assert "another request" in body["error"] and body["outcome"] == "rejected"
    assert r.llen(PENDING) == 1


@pytest.mark.parametrize(
    ("key", "says"),
    [("", "non-empty"), ("k" * 256, "at most 255"), ("a b", "printable ASCII")],
)
def test_a_bad_key_is_400_naming_the_header(
    client: FlaskClient, r: redis.Redis, key: str, says: str
) -> None:
    code, body = post(client, {"payload": 1}, key)
    assert code == 400 and "Idempotency-Key" in body["error"] and says in body["error"]
    assert r.llen(PENDING) == 0


def test_a_publish_is_made_once_per_key(client: FlaskClient, redis_server: RedisServer) -> None:
    sub = redis_server.client().pubsub()
    sub.subscribe(keys.channel("default"))
    assert sub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    code, first = post(client, {"payload": "news"}, "news-1", "/pubsub")
    assert code == 202 and first["receivers"] == 1 and "repeat" not in first
    code, again = post(client, {"payload": "news"}, "news-1", "/pubsub")
    assert code == 202 and again == {**first, "repeat": True}
    code, other = post(client, {"payload": "other"}, "news-1", "/pubsub")
    assert code == 409 and other["key"] == "news-1"
    got = [sub.get_message(timeout=0.5) for _ in range(3)]
    assert [m["type"] for m in got if m] == ["message"]  # one message reached the subscriber
    sub.close()


def test_racing_clients_through_gunicorn_push_once(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    """100 clients send the same keyed request at once through gunicorn (its 4 workers): one
    message, 100 answers naming it, 99 of them repeats."""
    gunicorn, base = start_gunicorn(redis_server.url, tmp_path / "gunicorn.log")
    answers: list[dict] = []
    start = threading.Barrier(100)

    def send() -> None:
        start.wait()
        resp = requests.post(f"{base}/prodcons", json={"payload": "once"}, timeout=10,
                             headers={"Idempotency-Key": "race-1"})  # fmt: skip
        assert resp.status_code == 202, resp.text
        answers.append(resp.json())

    try:
        threads = [threading.Thread(target=send) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    finally:
        gunicorn.stop()
    assert len(answers) == 100 and len({a["id"] for a in answers}) == 1
    assert sum("repeat" not in a for a in answers) == 1 and r.llen(PENDING) == 1
