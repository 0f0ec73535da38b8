"""The dashboard, ``/api/stats``, ``/api/history``, ``/metrics``, ``/api/messages/<id>``,
``/api/queues/<q>/dead``, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import redis
from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from producer import keys
from producer.connection.client import node_client
from producer.connection.writes import WriteTracker
from producer.store.deadletters import DeadLetters
from producer.store.tracking import cancel, check_id, find_record
from web.auth import require_token
from web.bus import Bus, get_bus
from web.errors import BadMessage, WriteUnconfirmed
from web.limits import load_json
from web.metrics import render
from web.openapi import describe

bp = Blueprint("api", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The index page: send a message in each mode, watch the counts."""
    settings = get_bus().settings
    return render_template("index.html", queues=settings.queues, channels=settings.channels,
                           token_required=bool(settings.api_token))  # fmt: skip


@bp.get("/api/stats")
def stats() -> ResponseReturnValue:
    """Queues, channels, every live process's counters, totals and latency percentiles."""
    return get_bus().overview()


@bp.get("/api/history")
def history() -> ResponseReturnValue:
    """Messages per second, bus-wide, over the last minutes (the dashboard's chart)."""
    return get_bus().history()


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    """The whole bus in Prometheus's text format (the same snapshot as /api/stats)."""
    return render(get_bus().overview()), 200, {"Content-Type": CONTENT_TYPE_LATEST}


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    """The OpenAPI 3.1 description of every endpoint (:mod:`web.openapi`)."""
    return describe(get_bus().settings)


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


@bp.get("/api/messages/<msg_id>")
def message(msg_id: str) -> ResponseReturnValue:
    """A tracked message's record (``?queue=`` names its queue; default: every configured
    queue is looked in). 404 when there is none: never tracked, unknown, or expired."""
    bus, queues = _where(msg_id)
    record = find_record(bus.get_client(), queues, msg_id)
    if record is None:
        raise _no_record(msg_id, "it was not tracked, is unknown, or its record expired", queues)
    return record


@bp.delete("/api/messages/<msg_id>")
def cancel_message(msg_id: str) -> ResponseReturnValue:
    """Cancel a tracked message (``?queue=`` names its queue; default: every configured queue
    is looked in): 200 with what happened (``outcome``: cancelled, signalled or finished, and
    the ``state`` it was in), 404 when there is no record of it. Guarded by the API token. A
    cancel repeated is harmless (it answers ``finished``), so a 503 may be retried at will."""
    bus, queues = _where(msg_id)
    require_token(bus.settings.api_token)
    done = cancel(bus.get_client(), queues, msg_id)
    if done is None:
        why = "only tracked messages can be cancelled, and its record may have expired"
        raise _no_record(msg_id, why, queues)
    return done.answer(msg_id)


def _where(msg_id: str) -> tuple[Bus, tuple[str, ...]]:
    """Where to look for message ``msg_id``'s record: ``?queue=``, else every configured queue
    (400 for an id no record can have, 404 for an unknown queue)."""
    bad = check_id(msg_id)
    if bad:
        raise BadMessage(400, bad)
    queue = request.args.get("queue")
    bus = _known(queue) if queue is not None else get_bus()
    return bus, (queue,) if queue is not None else bus.settings.queues


def _no_record(msg_id: str, why: str, queues: tuple[str, ...]) -> BadMessage:
    return BadMessage(
        404,
        f"no record of message {msg_id!r}: {why} (BUS_RESULT_TTL_S after its last change)",
        queues=list(queues),
    )


@bp.get("/api/queues/<queue>/dead")
def dead_list(queue: str) -> ResponseReturnValue:
    """A page of the queue's dead letters, newest first (``?start=0&count=100``)."""
    dead = _dead_letters(queue)
    start = _int_arg("start", 0, 0, 10**9)
    count = _int_arg("count", 100, 1, 1000)
    return {"queue": queue, "total": dead.total(), "entries": dead.entries(start, count)}


@bp.post("/api/queues/<queue>/dead/requeue")
def dead_requeue(queue: str) -> ResponseReturnValue:
    """Push dead letters back onto the queue as first attempts (JSON ``{"count": n}`` optional)."""
    bus = _known(queue)
    require_token(bus.settings.api_token)
    client = WriteTracker(node_client(bus.get_client(), keys.dead(queue)))
    count = _requeue_count()
    try:
        requeued, kept = DeadLetters(client, queue).requeue(count)
    except redis.RedisError as exc:
        # Refused before it moved anything: safe to retry. Once a move was sent, it may have
        # run (or some moves did): the client must look before it requeues again.
        if client.unsure or client.wrote:
            raise WriteUnconfirmed("the requeue", exc) from exc
        raise
    return {"queue": queue, "requeued": requeued, "kept": kept}


def _requeue_count() -> int | None:
    """The optional ``{"count": n}`` of a requeue (None: all of them). A body that is not
    that is refused: a typo must not requeue every dead letter."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    body = load_json(raw)
    if not isinstance(body, dict) or set(body) - {"count"}:
        raise BadMessage(400, 'the body must be empty or {"count": <positive integer>}')
    if "count" not in body:
        return None
    count = body["count"]
    if isinstance(count, float) and count.is_integer():
        count = int(count)  # 5.0 is the integer 5 in JSON
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise BadMessage(400, "'count' must be a positive integer")
    return count


def _dead_letters(queue: str) -> DeadLetters:
    return DeadLetters(_known(queue).get_client(), queue)


def _known(queue: str) -> Bus:
    bus = get_bus()
    if queue not in bus.settings.queues:
        raise BadMessage(404, f"unknown queue {queue!r}", allowed=list(bus.settings.queues))
    return bus


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:  # not an integer, or one past int_max_str_digits: out of range anyway
        raise BadMessage(400, f"'{name}' must be an integer between {low} and {high}") from None
    if not low <= value <= high:
        raise BadMessage(400, f"'{name}' must be between {low} and {high}")
    return value
