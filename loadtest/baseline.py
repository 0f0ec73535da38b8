"""The baseline: the seed articles' naive producer and consumers, run beside redis-bus under the
same load and the same faults so every report compares the two. Never imported by the product.

What makes them naive is kept on purpose, line for line with the pattern people copy:

* every client is ``redis.Redis(host=..., port=...)`` with redis-py's defaults (8.x: a 5 s socket
  timeout, 10 silent retries with backoff, no health checks, no keepalive tuning). Not
  ``Redis.from_url``: in redis-py 8 its connections get no retries at all, which would make the
  baseline weaker than the code people copy;
* the worker is ``while True: blpop(queue, 0)``: LPUSH + BLPOP serves the newest message first,
  a message popped is gone from Redis whatever happens to the process, and an exception ends it;
* the subscriber is a ``pubsub.listen()`` loop: nothing notices a silent link or counts a gap;
* ``/pubsub`` opens a new connection for every request, and any error is Flask's HTML 500.

The only addition is the ledger line each consumer writes per message
(:mod:`loadtest.ledger.records`), exactly as redis-bus's load-test handler does, so both are
accounted for the same way.

``python -m loadtest.baseline worker|subscriber --redis-url URL [--name N]``; the web app runs
under gunicorn: ``gunicorn -c web/gunicorn.conf.py 'loadtest.baseline:create_app()'`` with
``BASELINE_REDIS_URL`` set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from flask import Flask, redirect, request
from flask.typing import ResponseReturnValue

from loadtest.ledger import records

QUEUE = "baseline:queue"
CHANNEL = "baseline:channel"
ENV_URL = "BASELINE_REDIS_URL"


def create_app() -> Flask:
    """The naive producer endpoints: ``POST`` JSON ``{"payload": ...}``, or ``GET`` (the seed)."""
    url = os.environ[ENV_URL]
    r = connect(url)
    app = Flask(__name__)

    @app.route("/prodcons", methods=["GET", "POST"])
    def prodcons() -> ResponseReturnValue:
        r.lpush(QUEUE, json.dumps(_payload()))
        return ("ok", 200) if request.method == "POST" else redirect("/", 303)

    @app.route("/pubsub", methods=["GET", "POST"])
    def pubsub() -> ResponseReturnValue:
        conn = connect(url)  # a new connection per request, as the seed's endpoint
        conn.publish(CHANNEL, json.dumps(_payload()))
        return ("ok", 200) if request.method == "POST" else redirect("/", 303)

    return app


def connect(url: str) -> redis.Redis:
    """``redis.Redis(host=..., port=..., db=...)``, nothing else set: the seed's client."""
    parts = urlsplit(url)
    db = int(parts.path.lstrip("/") or 0)
    return redis.Redis(host=parts.hostname or "localhost", port=parts.port or 6379, db=db)


def _payload() -> object:
    if request.method == "POST":
        return request.get_json()["payload"]
    return random.randint(0, 1_000_000)


def run_worker(url: str, who: str) -> None:
    """``while True: blpop(queue, 0)``, then handle."""
    handle = _handler("prodcons", who)
    r = connect(url)
    while True:
        _, raw = r.blpop(QUEUE, 0)  # type: ignore[misc]
        handle(raw)  # type: ignore[arg-type]


def run_subscriber(url: str, who: str) -> None:
    """Subscribe, then ``for message in pubsub.listen()``."""
    handle = _handler("pubsub", who)
    r = connect(url)
    p = r.pubsub()
    p.subscribe(CHANNEL)
    for message in p.listen():
        if message["type"] == "message":
            handle(message["data"])


def _handler(mode: str, who: str) -> Callable[[bytes], None]:
    ledger = records.Ledger.from_env()
    work = records.Work.from_env()
    mark_start = os.environ.get(records.ENV_START) == "1"

    def handle(raw: bytes) -> None:
        lid = records.lid_of(raw)
        if ledger and mark_start:
            ledger.write(k="start", who=who, lid=lid, t=records.now())
        work.do()
        if ledger:
            ledger.write(k="got", sys="baseline", mode=mode, who=who, lid=lid, t=records.now())

    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.baseline",
        description="The seed articles' naive consumers (the load test's baseline).",
    )
    parser.add_argument("role", choices=("worker", "subscriber"))
    parser.add_argument("--redis-url", default=os.environ.get(ENV_URL, "redis://127.0.0.1:6379/0"))
    parser.add_argument("--name", default=f"baseline-{os.getpid()}", help="name in ledger lines")
    args = parser.parse_args(argv)
    run = run_worker if args.role == "worker" else run_subscriber
    run(args.redis_url, args.name)  # returns only by an exception, which ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
