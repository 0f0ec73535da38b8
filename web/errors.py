"""Every error is JSON with a clear message: never a traceback, never an HTML page."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, NotFound

from producer import (
    IdempotencyConflict,
    NotReplicated,
    PayloadError,
    QueueFull,
    Unconfirmed,
    UnknownPrerequisite,
)
from producer.errors import BusError
from web.bus import get_bus

log = logging.getLogger(__name__)
FULL_RETRY_AFTER_S = 1  # a full queue drains at the workers' pace: ask again soon


class BadMessage(BusError, HTTPException):
    """A request the bus refuses, with its status code and a JSON body."""

    def __init__(self, code: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class WriteUnconfirmed(Unconfirmed):
    """An operation of several commands failed after one that writes was sent: it may have
    run, in part or in full."""

    def __init__(self, what: str, cause: redis.RedisError) -> None:
        super().__init__(f"{what} failed after a write was sent: {cause}")
        self.public = (
            f"Redis did not confirm {what} ({type(cause).__name__}): it may or may not have run, "
            "in part or in full; look before you retry"
        )


def register(app: Flask) -> None:
    """Install the JSON error handlers on ``app``; a path with "//" is no route (404)."""
    # Werkzeug would answer a path with "//" inside with a 308 and an HTML page (to the path
    # with the slashes merged; a client following it would requeue or push), and serve one
    # that starts with "//" as if it had one slash. Neither is a route: both are 404 JSON.
    app.url_map.merge_slashes = False
    app.before_request(no_empty_segment)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(QueueFull, _queue_full)
    app.register_error_handler(IdempotencyConflict, _conflict)
    app.register_error_handler(UnknownPrerequisite, _unknown_prerequisite)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(PayloadError, _payload_error)
    app.register_error_handler(Exception, _internal_error)


def no_empty_segment() -> None:
    """The ``before_request`` hook: 404 for a path with "//" in it."""
    if "//" in request.environ.get("PATH_INFO", ""):  # request.path drops leading slashes
        raise NotFound("no route has '//' in its path: write each '/' once")


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else {}  # type: ignore[attr-defined]
    headers.update(getattr(exc, "extra_headers", {}))
    return _refusal(exc, headers)


def _refusal(exc: HTTPException, headers: dict[str, str]) -> ResponseReturnValue:
    code = exc.code or 500
    if 400 <= code < 500:
        get_bus().get_stats().incr("rejected")
    body: dict[str, object] = {"error": exc.description, "status": code}
    body.update(getattr(exc, "details", {}))
    return jsonify(body), code, headers


def _queue_full(exc: QueueFull) -> ResponseReturnValue:
    # Counted twice on purpose: refused_full by the producer (why), rejected as every 4xx.
    details = {"outcome": "rejected", "queue": exc.queue, "depth": exc.depth, "limit": exc.limit}
    refusal = BadMessage(429, str(exc), **details)
    return _refusal(refusal, {"Retry-After": str(FULL_RETRY_AFTER_S)})


def _conflict(exc: IdempotencyConflict) -> ResponseReturnValue:
    return _http_error(BadMessage(409, str(exc), outcome="rejected", key=exc.key))


def _unknown_prerequisite(exc: UnknownPrerequisite) -> ResponseReturnValue:
    missing = [{"queue": q, "id": i} for q, i in exc.missing]
    return _http_error(BadMessage(404, str(exc), outcome="rejected", missing=missing))


def _payload_error(exc: PayloadError) -> ResponseReturnValue:
    # Python's parser accepts NaN, Infinity, 1e999 and lone surrogates; the envelope does not.
    return _http_error(BadMessage(400, str(exc)))


# Cluster refusals that pass once the cluster has settled (redis-py's names for -CLUSTERDOWN,
# -TRYAGAIN, -MOVED and -ASK past our own redirects, -MASTERDOWN, -READONLY).
_RECONFIGURING = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ReadOnlyError,
)


def _redis_error(exc: redis.RedisError) -> ResponseReturnValue:
    # 503 and Retry-After only where a retry can succeed: Redis unreachable, slow, full, busy
    # with a script or loading its data. Any other refusal (a key of the wrong type, a missing
    # permission...) would be refused again: a 500 that says what Redis refused.
    # "outcome" tells a client whether a retry is safe: "rejected" (nothing was sent, retry at
    # will) or "unknown" (it may have run; a retry may deliver the message twice).
    outcome = "unknown" if isinstance(exc, Unconfirmed) else "rejected"
    if isinstance(exc, WriteUnconfirmed):
        message, retry_after = exc.public, 1
    elif isinstance(exc, NotReplicated):
        message, retry_after = (
            "the message is on the Redis primary but fewer replicas than BUS_WAIT_REPLICAS "
            "confirmed it in time: a failover may lose it (a retry may deliver it twice)",
            1,
        )
    elif isinstance(exc, Unconfirmed):
        message, retry_after = (
            "the connection to Redis broke after the message was sent: it may or may not have "
            "been accepted (a retry may deliver it twice)",
            1,
        )
    elif isinstance(exc, redis.exceptions.OutOfMemoryError):
        message, retry_after = "Redis is out of memory: the message was not accepted", 5
    elif isinstance(exc, redis.BusyLoadingError):
        message, retry_after = "Redis is loading its data: the command was not accepted", 1
    elif isinstance(exc, redis.ResponseError) and str(exc).startswith("BUSY "):
        message, retry_after = "Redis is busy running a script: the command was not accepted", 1
    elif isinstance(exc, _RECONFIGURING):
        message, retry_after = (
            "the Redis Cluster is reconfiguring (a failover, or a slot on the move): the "
            "command was not accepted",
            1,
        )
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        message, retry_after = (
            "Redis is unreachable or not answering: the message was not accepted",
            1,
        )
    else:
        return _redis_refused(exc)
    get_bus().get_stats().incr("unavailable")
    log.warning("503: %s (%s)", message, exc)
    body = {"error": message, "status": 503, "outcome": outcome}
    return jsonify(body), 503, {"Retry-After": str(retry_after)}


def _redis_refused(exc: redis.RedisError) -> ResponseReturnValue:
    log.exception("500: Redis refused %s %s: %s", request.method, request.path, exc)
    body = {"error": f"Redis refused the command: {exc}", "status": 500}
    return jsonify(body), 500


def _internal_error(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error")
    return jsonify({"error": "internal error (logged on the server)", "status": 500}), 500
