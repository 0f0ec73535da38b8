"""Every error is JSON with a clear message: never a traceback, never an HTML page."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from producer import PayloadError, Unconfirmed
from web.bus import get_bus

log = logging.getLogger(__name__)


class BadMessage(HTTPException):
    """A request the bus refuses, with its status code and a JSON body."""

    def __init__(self, code: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def register(app: Flask) -> None:
    """Install the JSON error handlers on ``app``."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(PayloadError, _payload_error)
    app.register_error_handler(Exception, _internal_error)


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    code = exc.code or 500
    if 400 <= code < 500:
        get_bus().get_stats().incr("rejected")
    body: dict[str, object] = {"error": exc.description, "status": code}
    body.update(getattr(exc, "details", {}))
    headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else {}  # type: ignore[attr-defined]
    return jsonify(body), code, headers


def _payload_error(exc: PayloadError) -> ResponseReturnValue:
    # Python's parser accepts NaN, Infinity, 1e999 and lone surrogates; the envelope does not.
    return _http_error(BadMessage(400, str(exc)))


def _redis_error(exc: redis.RedisError) -> ResponseReturnValue:
    # "outcome" tells a client whether a retry is safe: "rejected" (nothing was sent, retry at
    # will) or "unknown" (it may have run; a retry may deliver the message twice).
    outcome = "unknown" if isinstance(exc, Unconfirmed) else "rejected"
    if isinstance(exc, Unconfirmed):
        message, retry_after = (
            "the connection to Redis broke after the message was sent: it may or may not have "
            "been accepted (a retry may deliver it twice)",
            1,
        )
    elif isinstance(exc, redis.exceptions.OutOfMemoryError):
        message, retry_after = "Redis is out of memory: the message was not accepted", 5
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        message, retry_after = (
            "Redis is unreachable or not answering: the message was not accepted",
            1,
        )
    else:
        log.exception("unexpected Redis error")
        message, retry_after = f"Redis refused the command ({type(exc).__name__})", 5
    get_bus().get_stats().incr("unavailable")
    log.warning("503: %s (%s)", message, exc)
    body = {"error": message, "status": 503, "outcome": outcome}
    return jsonify(body), 503, {"Retry-After": str(retry_after)}


def _internal_error(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error")
    return jsonify({"error": "internal error (logged on the server)", "status": 500}), 500
