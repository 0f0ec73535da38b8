"""The web's own response headers: no MIME sniffing anywhere, API answers never cached, the
page under a strict Content-Security-Policy and never framed."""

from __future__ import annotations

from flask import Flask, Response, request

NO_SNIFF = ("X-Content-Type-Options", "nosniff")
NO_STORE = ("Cache-Control", "no-store")
# What every API answer carries, in this order: added by the hook below to Flask's answers,
# and written as they are by the producers' fast case (web.ingest), which bypasses the hook.
API_HEADERS = (NO_SNIFF, NO_STORE)
# The page loads its own script and stylesheet, and talks only to this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def add_secure_headers(response: Response) -> Response:
    """The ``after_request`` hook: the headers above, unless the view set its own."""
    response.headers.setdefault(*NO_SNIFF)
    if response.mimetype == "text/html" and response.status_code == 200:
        response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(*NO_STORE)
    elif not request.path.startswith("/static/"):
        response.headers.setdefault(*NO_STORE)
    return response


def secure_headers(app: Flask) -> None:
    """Add :func:`add_secure_headers` to every answer of ``app``."""
    app.after_request(add_secure_headers)
