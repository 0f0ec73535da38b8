"""examples/: the thumbnail app and its handler, end to end on a real Redis and worker.

The handler alone is tested without Redis; the app through Flask's test client (and once
under gunicorn, as ``make example`` starts it) against the session's redis-server, with a real
``python -m consumers worker --handler examples.handlers:render`` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from consumers.tracking import Context
from examples.app import QUEUE, create_app
from examples.handlers import STEPS, BadJob, render
from loadtest.harness.ports import free_port
from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, Settings, new_envelope
from tests.conftest import quick_settings
from tests.doctext import fenced
from tests.procs import ROOT, Proc, project_env

HANDLER = "examples.handlers:render"
STEP_S = "0.15"  # 5 steps: 0.75 s a job, each report 0.15 s after the last (written: > 0.1 s)


def pgm_header(size: int) -> bytes:
    return f"P5\n{size} {size}\n255\n".encode()


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    made = create_app(settings)
    yield made
    made.extensions["example_bus"].close()


@pytest.fixture
def worker(spawn: Callable[..., Proc], redis_server: RedisServer, tmp_path: Path,
           r: redis.Redis) -> Iterator[Path]:  # fmt: skip
    """A worker for "renders" running the example's handler; the directory it writes to."""
    out = tmp_path / "out"
    spawn("worker", redis_server.url, "--queue", QUEUE, "--handler", HANDLER,
          EXAMPLE_STEP_S=STEP_S, EXAMPLE_OUT=str(out), BUS_MAX_ATTEMPTS="2")  # fmt: skip
    yield out


def poll(c: FlaskClient, msg_id: str, seen: list[dict[str, Any]],
         timeout_s: float = 15.0) -> dict[str, Any]:  # fmt: skip
    """GET /render/<id> every 20 ms until the record is final; every record seen is kept."""

    def final() -> dict[str, Any] | None:
        resp = c.get(f"/render/{msg_id}")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        rec: dict[str, Any] = resp.get_json()
        seen.append(rec)
        return rec if rec["final"] else None

    return wait_for(final, timeout_s, f"render {msg_id} to be handled or dead", every_s=0.02)


def test_the_handler_alone_without_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's test constructors: an envelope as a producer sends it, and a Context that
    keeps the progress reports it would write."""
    monkeypatch.setenv("EXAMPLE_OUT", str(tmp_path))
    monkeypatch.setenv("EXAMPLE_STEP_S", "0.11")  # past the 0.1 s between written reports
    env = new_envelope({"name": "cat", "size": 16}, track=True)
    ctx = Context.for_tests(env, QUEUE)
    result = render(env, ctx)
    path = tmp_path / "cat-16.pgm"
    data = path.read_bytes()
    assert result == {"path": str(path.resolve()), "bytes": len(data)}
    assert path.stat().st_mode & 0o777 == 0o644
    assert data.startswith(pgm_header(16)) and len(data) == len(pgm_header(16)) + 16 * 16
    assert ctx.reports == [((i + 1) / STEPS, f"step {i + 1} of {STEPS}") for i in range(STEPS)]
    # At least once: the same message again writes the same file with the same bytes.
    assert render(env, Context.for_tests(env, QUEUE)) == result
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat-16.pgm"]  # no temporary left
    bad_jobs = [{"name": "../x", "size": 16}, {"name": "cat", "size": 4}, [1], {"name": "a"},
                {"name": "cat", "size": True}, {"name": "cat", "size": 16, "color": 1}]  # fmt: skip
    for bad in bad_jobs:
        bad_env = new_envelope(bad, track=True)
        with pytest.raises(BadJob):
            render(bad_env, Context.for_tests(bad_env, QUEUE))


def test_the_readmes_snippet_runs_as_written(tmp_path: Path) -> None:
    """The README's "Test the handler without Redis" block, run as written with its
    EXAMPLE_OUT and EXAMPLE_STEP_S=0.11: what it prints is what its comments say."""
    (block,) = fenced((ROOT / "examples" / "README.md").read_text(encoding="utf-8"), "python")
    env = project_env("redis://127.0.0.1:1/0", EXAMPLE_OUT=str(tmp_path), EXAMPLE_STEP_S="0.11")
    done = subprocess.run([sys.executable, "-c", block], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result, reports = done.stdout.splitlines()
    path = tmp_path / "cat-16.pgm"
    assert result == repr({"path": str(path.resolve()), "bytes": path.stat().st_size})
    assert reports == repr([((i + 1) / STEPS, f"step {i + 1} of {STEPS}") for i in range(STEPS)])


def test_redis_down_is_a_503(tmp_path: Path) -> None:
    """Nothing listens on the port: the push is refused before anything is sent."""
    app = create_app(quick_settings(f"redis://127.0.0.1:{free_port()}/0"))
    with app.test_client() as c:
        resp = c.post("/render", json={"name": "cat", "size": 16})
        body = resp.get_json()
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
        assert body["outcome"] == "rejected" and "ConnectionError" in body["error"]
        resp = c.get("/render/abc")
        assert resp.status_code == 503 and "ConnectionError" in resp.get_json()["error"]
        for bad in ({"name": "cat"}, "cat", {"name": "cat", "size": 9999}):
            resp = c.post("/render", json=bad)
            assert resp.status_code == 400 and "error" in resp.get_json(), bad
        assert c.post("/render", data="{not json").status_code == 400
        assert c.get("/render/" + "x" * 300).status_code == 400
        assert b"<form" in c.get("/").data
    app.extensions["example_bus"].close()


@pytest.mark.slow
def test_a_render_is_queued_shows_progress_and_its_result(app: Flask, worker: Path) -> None:
    with app.test_client() as c:
        resp = c.post("/render", json={"name": "cat", "size": 64})
        assert resp.status_code == 202, resp.get_data(as_text=True)
        body = resp.get_json()
        assert body["queue"] == QUEUE and resp.headers["Location"] == body["status_url"]
        seen: list[dict[str, Any]] = []
        rec = poll(c, body["id"], seen)
        assert c.get("/render/nope").status_code == 404
    assert rec["state"] == "handled" and rec["progress"] == 1.0 and rec["attempt"] == 1
    between = [s for s in seen if s["state"] == "in-flight" and 0 < s.get("progress", 0) < 1]
    assert between, [(s["state"], s.get("progress")) for s in seen]
    assert between[-1]["progress_text"].startswith("step ")
    path = worker / "cat-64.pgm"
    assert rec["result"] == {"path": str(path), "bytes": path.stat().st_size}
    assert path.read_bytes().startswith(pgm_header(64))
    assert path.stat().st_size == len(pgm_header(64)) + 64 * 64


@pytest.mark.slow
def test_a_bad_payload_from_another_producer_ends_dead(
    app: Flask, worker: Path, settings: Settings
) -> None:
    """The app refuses a bad job with a 400, but any producer may push to the queue: the
    handler rejects it too: dead at once (attempt 1), reason given."""
    sent = Producer.from_settings(settings).push({"name": "cat", "size": 4}, QUEUE, track=True)
    with app.test_client() as c:
        rec = poll(c, sent.envelope.id, [])
    assert rec["state"] == "dead" and rec["attempt"] == 1
    assert rec["reason"] == "rejected: 'size' must be an integer from 8 to 512, got 4"
    assert not worker.exists() or not any(worker.iterdir())


@pytest.mark.slow
def test_under_gunicorn_as_make_example_starts_it(
    redis_server: RedisServer, worker: Path, tmp_path: Path
) -> None:
    """The app factory as examples/Procfile names it, in forked gunicorn workers."""
    port = free_port()
    cmd = [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "examples/gunicorn.conf.py",
           "examples.app:create_app()"]  # fmt: skip
    env = project_env(redis_server.url, EXAMPLE_BIND=f"127.0.0.1:{port}")
    proc = Proc(cmd, env, tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.proc.poll() is None, proc.log()
            try:
                return requests.get(base + "/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, 30, "gunicorn to answer", every_s=0.1)
        resp = requests.post(base + "/render", json={"name": "dog", "size": 32}, timeout=5)
        assert resp.status_code == 202, resp.text
        url = base + resp.json()["status_url"]
        deadline = time.monotonic() + 15
        while (rec := requests.get(url, timeout=5).json())["state"] != "handled":
            assert time.monotonic() < deadline and rec["state"] != "dead", json.dumps(rec)
            time.sleep(0.05)
        assert rec["result"]["path"] == str(worker / "dog-32.pgm")
    finally:
        proc.stop()
