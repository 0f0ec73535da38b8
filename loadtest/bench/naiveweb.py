"""The HTTP section's references, served by gunicorn exactly as the bus's web app is:

- ``POST /naive``: the seed articles' producer (as in :mod:`loadtest.baseline`): parse the JSON
  body, LPUSH its payload re-encoded on one ``redis.Redis`` made once per process, answer 202
  JSON. No envelope, no checks, no stats: what one LPUSH behind Flask costs.
- ``POST /ok``: answers "ok" without reading anything: what Flask under gunicorn costs.

``gunicorn ... loadtest.bench.naiveweb:app`` with ``BENCH_REDIS_URL`` set.
"""

from __future__ import annotations

import json
import os

import redis
from flask import Flask, request
from flask.typing import ResponseReturnValue

KEY = "bench:naive"

app = Flask(__name__)
# Connects on first use, in the forked worker (redis-py's pool also resets itself after a fork).
client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@app.post("/naive")
def naive() -> ResponseReturnValue:
    depth = client.lpush(KEY, json.dumps(request.get_json()["payload"]))
    return {"depth": depth}, 202


@app.post("/ok")
def ok() -> ResponseReturnValue:
    return "ok"
