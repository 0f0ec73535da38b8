"""``BUS_API_TOKEN``: what changes the bus needs ``Authorization: Bearer <token>`` (the page's
forms may carry it as a field), the seed-style GETs are off, reads stay open, and the token is
shown nowhere: not in answers, logs, errors, ``--help`` or the settings' repr. Without a token
everything is as before. The web's own headers: no sniffing, no caching of API answers, a
strict Content-Security-Policy on the page."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import redis
from flask.testing import FlaskClient

from producer import Settings, keys
from tests.procs import ROOT
from tests.webapp import MakeApp, assert_json, post_json

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(make_app: MakeApp, settings: Settings) -> FlaskClient:
    return make_app(settings.replace(api_token=TOKEN)).test_client()


def test_sending_needs_the_token(guarded: FlaskClient, r: redis.Redis) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN}):  # fmt: skip
        for path, body in (("/prodcons", {"payload": 1}), ("/pubsub", {"payload": 1})):
            resp = guarded.post(path, json=body, headers=headers)
            assert resp.status_code == 401, (path, headers)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "API token" in assert_json(resp)["error"]
    assert r.llen(keys.pending("default")) == 0  # nothing was sent
    assert guarded.post("/prodcons", json={"payload": 1}, headers=AUTH).status_code == 202
    assert guarded.post("/pubsub", json={"payload": 1}, headers=AUTH).status_code == 202
    assert r.llen(keys.pending("default")) == 1


def test_a_form_carries_the_token_as_a_field(guarded: FlaskClient, r: redis.Redis) -> None:
    assert guarded.post("/prodcons", data={"payload": "1"}).status_code == 401
    forged = guarded.post("/prodcons", data={"payload": "1", "token": "guess-guess-guess-1"})
    assert forged.status_code == 401
    sent = guarded.post("/prodcons", data={"payload": "1", "token": TOKEN})
    assert sent.status_code == 303 and r.llen(keys.pending("default")) == 1


def test_seed_gets_are_off_and_reads_stay_open(guarded: FlaskClient, r: redis.Redis) -> None:
    for path in ("/prodcons", "/pubsub"):
        resp = guarded.get(path)
        assert resp.status_code == 403 and "POST with the token" in assert_json(resp)["error"]
    assert r.llen(keys.pending("default")) == 0
    for path in ("/api/stats", "/api/history", "/metrics", "/healthz", "/readyz",
                 "/api/queues/default/dead", "/openapi.json", "/"):  # fmt: skip
        assert guarded.get(path).status_code == 200, path


def test_the_requeue_needs_the_token(guarded: FlaskClient) -> None:
    url = "/api/queues/default/dead/requeue"
    assert guarded.post(url).status_code == 401
    code, _ = post_json(guarded, url, {})
    assert code == 401
    resp = guarded.post(url, headers=AUTH)
    assert resp.status_code == 200 and assert_json(resp)["requeued"] == 0


def test_the_description_says_what_is_guarded(guarded: FlaskClient) -> None:
    spec = assert_json(guarded.get("/openapi.json"))
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert spec["paths"]["/prodcons"]["post"]["security"] == [{"token": []}]
    assert "401" in spec["paths"]["/api/queues/{queue}/dead/requeue"]["post"]["responses"]
    assert "security" not in spec["paths"]["/api/stats"]["get"]
    assert TOKEN not in guarded.get("/openapi.json").get_data(as_text=True)


def test_without_a_token_nothing_changes(make_app: MakeApp, settings: Settings) -> None:
    c = make_app(settings).test_client()
    assert c.post("/prodcons", json={"payload": 1}).status_code == 202
    assert c.get("/prodcons").status_code == 303
    spec = assert_json(c.get("/openapi.json"))
    assert "securitySchemes" not in spec["components"]
    assert "token" not in c.get("/").get_data(as_text=True).lower().replace("tokens", "")


def test_headers(guarded: FlaskClient) -> None:
    page = guarded.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and page.headers["X-Frame-Options"] == "DENY"
    assert 'class="api-token"' in page.get_data(as_text=True)
    for resp in (page, guarded.get("/api/stats"),
                 guarded.post("/prodcons", json={"payload": 1}, headers=AUTH),  # fast path
                 guarded.post("/prodcons", json={"payload": 1})):  # fmt: skip
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"


def test_the_token_is_shown_nowhere(guarded: FlaskClient, settings: Settings,
                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    seen = [
        repr(settings.replace(api_token=TOKEN)),
        str(settings.replace(api_token=TOKEN)),
        guarded.post("/prodcons", json={"payload": 1}).get_data(as_text=True),
        guarded.post("/prodcons", json={"payload": 1}, headers=AUTH).get_data(as_text=True),
        guarded.get("/api/stats").get_data(as_text=True),
        guarded.get("/metrics").get_data(as_text=True),
        guarded.get("/").get_data(as_text=True),
    ]
    env = {**os.environ, "BUS_API_TOKEN": TOKEN, "BUS_REDIS_URL": "redis://127.0.0.1:1/0",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    for args in (["worker", "--help"], ["status"], ["worker", "--check"]):
        done = subprocess.run([sys.executable, "-m", "consumers", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        seen += [done.stdout, done.stderr]
    bad = subprocess.run([sys.executable, "-m", "consumers", "status"],
                         env={**env, "BUS_API_TOKEN": TOKEN[:8]},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 78 and "BUS_API_TOKEN" in bad.stderr
    seen += [bad.stderr, caplog.text]
    assert not [s for s in seen if TOKEN in s or TOKEN[:8] in s]
