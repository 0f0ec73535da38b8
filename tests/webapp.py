"""Helpers for tests of the web app through Flask's test client, and of gunicorn serving it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from loadtest.harness.ports import free_port
from loadtest.harness.waits import wait_for
from producer import Settings
from tests.procs import ROOT, Proc, get_json, project_env
from web import create_app

MakeApp = Callable[[Settings | None], Flask]


def apps() -> Iterator[MakeApp]:
    """The body of a ``make_app`` fixture: build apps, close their threads and pools after."""
    made: list[Flask] = []

    def make(settings: Settings | None) -> Flask:
        app = create_app(settings)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["bus"].close()


def post_json(c: FlaskClient, url: str, body: object) -> tuple[int, dict]:
    resp = c.post(url, data=json.dumps(body), content_type="application/json")
    return resp.status_code, assert_json(resp)


def assert_json(resp: TestResponse) -> dict:
    assert resp.mimetype == "application/json", resp.get_data(as_text=True)[:200]
    return resp.get_json()


def start_gunicorn(redis_url: str, log_path: Path, **env: str) -> tuple[Proc, str]:
    """gunicorn with ``web/gunicorn.conf.py`` on a free port, once it answers /readyz:
    (the process, its base URL)."""
    port = free_port()
    full_env = project_env(redis_url, BUS_WEB_BIND=f"127.0.0.1:{port}", **env)
    cmd = [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "web/gunicorn.conf.py", "web.wsgi:app"]
    proc = Proc(cmd, full_env, log_path)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.proc.poll() is None, proc.log()
        return get_json(base + "/readyz") is not None

    try:
        wait_for(up, 30, "gunicorn to answer /readyz", every_s=0.1)
    except BaseException:
        proc.stop()
        raise
    return proc, base
