"""The producers' fast path (web/ingest.py) answers exactly as the Flask views do, takes only
the well-formed JSON POSTs, and never sends a message twice when its send fails."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from producer import Settings
from tests import webapp
from tests.webapp import MakeApp
from web import create_app
from web.ingest import FastPost

PENDING = "bus:{default}:pending"
VARIES = ("id", "src")  # per message, per process


@pytest.fixture
def apps(settings: Settings) -> Iterator[tuple[Flask, Flask]]:
    """Two apps on the session server: one as built, one whose fast path is bypassed."""
    fast = create_app(settings.replace(queues=("default", "jobs"), channels=("default", "news")))
    slow = create_app(settings.replace(queues=("default", "jobs"), channels=("default", "news")))
    middleware = slow.wsgi_app.app  # type: ignore[attr-defined]
    assert isinstance(middleware, FastPost)
    slow.wsgi_app.app = middleware.wsgi_app  # type: ignore[attr-defined]
    yield fast, slow
    for app in (fast, slow):
        app.extensions["bus"].close()


def answer(app: Flask, path: str, data: bytes, content_type: str | None) -> tuple[Any, ...]:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = app.test_client().post(path, data=data, headers=headers)
    body = resp.get_data()
    shown: Any = body
    if resp.mimetype == "application/json":
        shown = json.loads(body)
        if isinstance(shown, dict) and resp.status_code == 202:
            assert body.endswith(b"}\n") and b" " not in body.replace(b'" ', b"")
            shown = {k: (type(v).__name__ if k in VARIES else v) for k, v in shown.items()}
            shown = list(shown.items())  # the order of the fields too
    header_names = [k for k, _ in resp.headers if k != "Content-Length"]
    assert int(resp.headers["Content-Length"]) == len(body)
    return resp.status, header_names, resp.headers.get("Content-Type"), shown


@pytest.mark.parametrize(
    ("path", "data", "content_type"),
    [
        ("/prodcons", b'{"payload": 1}', "application/json"),
        ("/prodcons", b'{"payload": {"s": "\\u00e9t\\u00e9", "n": [1, 2]}, "queue": "jobs"}', None),
        ("/prodcons", '{"payload": "été"}'.encode(), "application/json; charset=utf-8"),
        ("/pubsub", b'{"payload": [1, null], "channel": "news"}', "text/plain"),
        ("/prodcons", b'{"payload": 1, "queue": "nope"}', "application/json"),
        ("/pubsub", b'{"payload": 1, "queue": "jobs"}', "application/json"),
        ("/prodcons", b'{"queue": "jobs"}', "application/json"),
        ("/prodcons", b'{"payload": 1, "queue": 7}', "application/json"),
        ("/prodcons", b"[1]", "application/json"),
        ("/prodcons", b'{"payload": 1', "application/json"),
        ("/prodcons", b"\xff\xfe", "application/json"),
        ("/prodcons", b'{"payload": NaN}', "application/json"),
        ("/pubsub", b'{"payload": Infinity}', "application/json"),
        ("/prodcons", b"", "application/json"),
        ("/prodcons", b"payload=5&queue=jobs", "application/x-www-form-urlencoded"),
        ("/prodcons/", b'{"payload": 1}', "application/json"),
        ("/prodcons", b'{"payload": ' + b"9" * 5000 + b"}", "application/json"),
        ("/prodcons", b'{"payload": 1, "timeout_s": 30}', "application/json"),
        ("/prodcons", b'{"payload": 1, "timeout_s": 0}', "application/json"),
        ("/prodcons", b'{"payload": 1, "timeout_s": 1e999}', "application/json"),
        ("/prodcons", b'{"payload": 1, "timeout_s": ' + b"9" * 400 + b"}", "application/json"),
        ("/prodcons", b'{"payload": 1, "timeout_s": true}', "application/json"),
        ("/pubsub", b'{"payload": 1, "timeout_s": 30}', "application/json"),
    ],
)
def test_the_fast_path_answers_as_flask_does(
    apps: tuple[Flask, Flask], r: redis.Redis, path: str, data: bytes, content_type: str | None
) -> None:
    fast, slow = apps
    got = answer(fast, path, data, content_type)
    r.flushdb()  # the same queue depth for both
    assert got == answer(slow, path, data, content_type)


@pytest.mark.parametrize("path", ["/prodcons", "/pubsub"])
def test_a_body_cut_short_is_refused_by_both_paths(
    apps: tuple[Flask, Flask], r: redis.Redis, path: str
) -> None:
    """19 of the 30 bytes announced, from a server that ends the stream itself (gunicorn sets
    wsgi.input_terminated, so Werkzeug does not check the length): valid JSON, but not the
    whole body. The fast path and Flask alike answer 400 JSON and send nothing."""
    for app in apps:
        resp = app.test_client().post(
            path,
            input_stream=io.BytesIO(b'{"payload": 1}     '),
            content_type="application/json",
            environ_overrides={"CONTENT_LENGTH": "30", "wsgi.input_terminated": True},
        )
        assert resp.status_code == 400, resp.get_data(as_text=True)
        assert resp.mimetype == "application/json"
        assert "after 19 of the 30 bytes" in resp.get_json()["error"]
        stats = app.extensions["bus"].get_stats()
        assert (stats.get("pushed"), stats.get("published"), stats.get("rejected")) == (0, 0, 1)
    assert r.llen(PENDING) == 0


def test_the_fast_path_takes_only_well_formed_json_posts(
    apps: tuple[Flask, Flask], r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _ = apps
    middleware = fast.wsgi_app.app  # type: ignore[attr-defined]
    flask_calls: list[str] = []
    inner = middleware.wsgi_app

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        flask_calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    monkeypatch.setattr(middleware, "wsgi_app", counted)
    c = fast.test_client()
    assert c.post("/prodcons", json={"payload": 1}).status_code == 202
    assert c.post("/pubsub", json={"payload": 1}).status_code == 202
    assert flask_calls == []
    assert c.post("/prodcons", json={"payload": 1, "queue": "nope"}).status_code == 404
    assert c.get("/prodcons").status_code == 303
    assert c.post("/prodcons", data={"payload": "1"}).status_code == 303
    assert flask_calls == ["/prodcons"] * 3
    assert r.llen(PENDING) == 3


def test_a_refused_send_is_answered_by_flask_and_not_sent_again(
    make_app: Any, settings: Settings, r: redis.Redis
) -> None:
    app = make_app(settings.replace(max_queue_depth=1))
    c = app.test_client()
    assert c.post("/prodcons", json={"payload": 1}).status_code == 202
    resp = c.post("/prodcons", json={"payload": 2})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert resp.get_json()["outcome"] == "rejected"
    assert r.llen(PENDING) == 1
    stats = app.extensions["bus"].get_stats()
    assert (stats.get("pushed"), stats.get("refused_full"), stats.get("rejected")) == (1, 1, 1)


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    yield from webapp.apps()
