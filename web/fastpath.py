"""The producers' hot path: ``POST /prodcons`` and ``POST /pubsub`` with a valid JSON body,
answered 202 without Flask's request machinery.

Profiled under gunicorn (sync workers, wrk), Flask's request context, routing and response
object cost each POST about as much CPU as its own Redis round trip, and an endpoint that only
answers "ok" spends most of its time there. This WSGI middleware answers the one case that
matters for throughput, a well-formed JSON POST that Redis accepts, with the same checks
(:func:`web.ingest.check_body`), the same producer and the same 202 body, bytes and headers.

Everything else goes to Flask as before, with the body it already read: other methods and
paths, forms, a body that is chunked, missing, cut short, too long or not valid JSON (or holds
an integer past Python's digits limit), a refused message
(the 4xx comes from Flask's handlers), and a send that failed: then the view raises the very
error (:data:`web.ingest.FAILED`) and the error handlers answer it, so nothing is sent twice
and every error answer is Flask's.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask

from web.auth import bearer, same_token
from web.bus import Bus
from web.headers import API_HEADERS
from web.ingest import FAILED, FORM_TYPES, accepted, check_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# PATH_INFO -> (destination field, producer method)
ROUTES = {"/prodcons": ("queue", "push"), "/pubsub": ("channel", "publish")}


class FastPost:
    """WSGI middleware in front of the Flask app's ``wsgi_app`` (see the module docstring)."""

    def __init__(self, app: Flask, wsgi_app: WSGIApplication, bus: Bus) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.bus = bus
        self.max_bytes = int(app.config["MAX_CONTENT_LENGTH"])
        provider: Any = app.json
        # Flask's JSON answers, compact (outside debug mode) and newline-terminated.
        self.encoder = json.JSONEncoder(
            ensure_ascii=provider.ensure_ascii, sort_keys=provider.sort_keys, separators=(",", ":")
        )
        self.allowed = {"queue": bus.settings.queues, "channel": bus.settings.channels}
        self.token = bus.settings.api_token

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if (
            route is None
            or environ.get("REQUEST_METHOD") != "POST"
            or "HTTP_TRANSFER_ENCODING" in environ
            or self.app.debug  # Flask indents its JSON then, or when told to
            or getattr(self.app.json, "compact", None) is False
            or (
                self.token and not same_token(bearer(environ.get("HTTP_AUTHORIZATION")), self.token)
            )
        ):
            return self.wsgi_app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if not 0 < length <= self.max_bytes or mimetype in FORM_TYPES:
            return self.wsgi_app(environ, start_response)
        # web.limits.BodyReader, ahead of this, has read the body whole: a body cut short
        # reaches here as an empty one, which Flask refuses.
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)  # Flask reads it again if it answers
        dest_field, method = route
        allowed = self.allowed[dest_field]
        try:
            payload, name = check_body(json.loads(raw), dest_field, allowed)
        except Exception:  # not JSON, or refused: Flask says why
            return self.wsgi_app(environ, start_response)
        try:
            sent = getattr(self.bus.get_producer(), method)(payload, name)
        except Exception as exc:  # answered by Flask's error handlers, not sent again
            environ[FAILED] = exc
            return self.wsgi_app(environ, start_response)
        body = (self.encoder.encode(accepted(dest_field, name, sent)) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   *API_HEADERS]  # fmt: skip
        start_response("202 ACCEPTED", headers)
        return [body]

    def _authorized(self, environ: WSGIEnvironment) -> bool:
        """Whether the request carries the API token (else Flask answers the 401)."""
        return same_token(bearer(environ.get("HTTP_AUTHORIZATION")), self.token)
