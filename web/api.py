"""``/api/stats``, ``/healthz``, ``/readyz`` and the index page."""

from __future__ import annotations

import redis
from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from web.bus import get_bus

bp = Blueprint("api", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The index page: send a message in each mode, watch the counts."""
    settings = get_bus().settings
    return render_template("index.html", queues=settings.queues, channels=settings.channels)


@bp.get("/api/stats")
def stats() -> ResponseReturnValue:
    """Queues, channels, every live process's counters, totals and latency percentiles."""
    return get_bus().overview()


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up (no Redis round trip)."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready when Redis answers PING; 503 otherwise."""
    try:
        get_bus().get_client().ping()
    except redis.RedisError as exc:
        body = {"status": "unavailable", "redis": f"{type(exc).__name__}: {exc}"}
        return body, 503, {"Retry-After": "1"}
    return {"status": "ready", "redis": "ok"}
