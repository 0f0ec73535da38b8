"""The web side of the example: a Flask app that queues thumbnail renders on the bus.

    POST /render       {"name": "cat", "size": 64} -> 202 {"id": ..., "status_url": ...}
    GET  /render/<id>  the job's record: state, progress, progress_text, result or reason
    GET  /             a form that sends a job and polls its record

Run it with gunicorn (``make example`` does, on 127.0.0.1:8001)::

    BUS_REDIS_URL=... .venv/bin/gunicorn -c examples/gunicorn.conf.py 'examples.app:create_app()'

Jobs go to the queue ``renders`` as tracked messages, for a worker running
``examples.handlers:render``. The app reads the ``BUS_*`` settings once (a bad one stops it at
start) and builds its :class:`~producer.Producer` on first use in each process: gunicorn forks
its workers after loading the app, and a connection pool must not be shared across a fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, request, url_for
from flask.typing import ResponseReturnValue

from examples.handlers import BadJob, parse_job
from producer import NotReplicated, Producer, QueueFull, Settings, Unconfirmed
from producer.store.tracking import check_id, read_record

QUEUE = "renders"
MAX_BODY_BYTES = 4096
RETRY_AFTER_S = "1"


class Bus:
    """This app's producer, built lazily once per process (see the module's docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Producer | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def producer(self) -> Producer:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    # name: how the connection shows in Redis's CLIENT LIST
                    self._producer = Producer.from_settings(
                        self.settings, name=f"example-{os.getpid()}"
                    )
                    self._pid = os.getpid()
        assert self._producer is not None
        return self._producer

    def close(self) -> None:
        if self._producer is not None and self._pid == os.getpid():
            self._producer.close()
        self._producer, self._pid = None, -1


def create_app(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """The app, configured by ``settings`` or else by the ``BUS_*`` variables of ``environ``
    (default: the process's environment)."""
    if settings is None:
        settings = Settings.from_env(os.environ if environ is None else environ)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    bus = Bus(settings)
    app.extensions["example_bus"] = bus

    @app.post("/render")
    def submit() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        if body is None:
            return _error(400, 'send JSON: {"name": "cat", "size": 64}')
        try:
            job = parse_job(body)
        except BadJob as exc:
            return _error(400, str(exc))
        try:
            sent = bus.producer().push({"name": job.name, "size": job.size}, QUEUE, track=True)
        except QueueFull as exc:
            # BUS_MAX_QUEUE_DEPTH: nothing was pushed; the workers drain the queue.
            return _error(429, str(exc), {"Retry-After": RETRY_AFTER_S}, outcome="rejected")
        except Unconfirmed as exc:
            # The push may have run (NotReplicated: it did, on the primary only). Its record is
            # created in the same script as the push, so GET /render/<id> settles it: a record
            # means the job was queued; 404 means it was not.
            ids = [e.id for e in exc.envelopes]
            what = "replicated" if isinstance(exc, NotReplicated) else "confirmed"
            return _error(503, f"Redis did not confirm the push ({what}): {exc}",
                          {"Retry-After": RETRY_AFTER_S}, outcome="unknown",
                          id=ids[0] if ids else None)  # fmt: skip
        except redis.RedisError as exc:
            return _redis_down(exc, outcome="rejected")
        msg_id = sent.envelope.id
        status_url = url_for("status", msg_id=msg_id)
        body = {"id": msg_id, "queue": QUEUE, "depth": sent.result, "status_url": status_url}
        return body, 202, {"Location": status_url}

    @app.get("/render/<msg_id>")
    def status(msg_id: str) -> ResponseReturnValue:
        bad = check_id(msg_id)
        if bad:
            return _error(400, bad)
        try:
            record = read_record(bus.producer().client, QUEUE, msg_id)
        except redis.RedisError as exc:
            return _redis_down(exc)
        if record is None:
            return _error(404, f"no render {msg_id!r}: unknown, or its record expired")
        return record

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return {"status": "ok"}

    @app.get("/")
    def index() -> ResponseReturnValue:
        return FORM, 200, {"Content-Type": "text/html; charset=utf-8"}

    @app.errorhandler(413)
    def too_large(exc: Exception) -> ResponseReturnValue:
        return _error(413, f"a render request is at most {MAX_BODY_BYTES} bytes")

    return app


def _error(code: int, message: str, headers: dict[str, str] | None = None,
           **details: Any) -> ResponseReturnValue:  # fmt: skip
    return {"error": message, "status": code, **details}, code, headers or {}


def _redis_down(exc: redis.RedisError, **details: Any) -> ResponseReturnValue:
    """503 for Redis trouble: unreachable, too slow, refusing (OOM, LOADING, a NOPERM from an
    ACL that does not allow the command). Before the push was sent, so nothing was queued."""
    message = f"Redis is unavailable: {type(exc).__name__}: {exc}"
    return _error(503, message, {"Retry-After": RETRY_AFTER_S}, **details)


FORM = """<!doctype html>
<meta charset="utf-8">
<title>thumbnails</title>
<h1>Render a thumbnail</h1>
<form id="f">
  <label>name <input name="name" value="cat" pattern="[A-Za-z0-9_-]{1,64}" required></label>
  <label>size <input name="size" type="number" value="64" min="8" max="512" required></label>
  <button>render</button>
</form>
<pre id="out"></pre>
<script>
const out = document.getElementById("out");
document.getElementById("f").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const job = {name: form.get("name"), size: Number(form.get("size"))};
  const resp = await fetch("render", {method: "POST", body: JSON.stringify(job),
                                      headers: {"Content-Type": "application/json"}});
  let body = await resp.json();
  out.textContent = JSON.stringify(body, null, 2);
  if (resp.status !== 202) return;
  const url = body.status_url;
  while (true) {
    await new Promise((done) => setTimeout(done, 200));
    const r = await fetch(url);
    body = await r.json();
    out.textContent = JSON.stringify(body, null, 2);
    if (r.status !== 200 || body.final) return;
  }
});
</script>
"""
