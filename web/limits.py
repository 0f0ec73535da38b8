"""Request bodies, read in one place before the app sees them: whole, or refused.

A body is measured against the size limit whatever its framing, and one that ends before its
``Content-Length`` (the client closed or half-closed its connection early) is refused: never
parsed, so a cut body that still happens to be valid JSON cannot send a message. The JSON in a
body is parsed by :func:`load_json`, which names Python's limit on an integer's digits.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from flask import Flask, request

from web.errors import BadMessage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

UNREAD = "bus.body.unread"  # environ key: why the body could not be read whole


class BodyReader:
    """WSGI middleware: reads the request body whole, up to one byte past ``max_bytes``, and
    hands it on as a stream of exactly its ``Content-Length``; Flask answers 413 past the limit.

    Werkzeug trusts a server that sets ``wsgi.input_terminated`` (gunicorn does) to end the
    stream at the body's end, so it reads such a stream as it comes: a body cut short by the
    client would be taken as the whole body, and a chunked one longer than
    ``MAX_CONTENT_LENGTH`` would be cut at the limit without an error. Here a body that is not
    all there is refused instead (:func:`refuse_unread`, 400).
    """

    def __init__(self, app: WSGIApplication, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        declared = _content_length(environ)
        # Only a server that ends the stream at the last chunk (gunicorn, Werkzeug's) can be
        # read to its end; elsewhere Werkzeug gives the app an empty body, as it always did.
        if chunked and environ.get("wsgi.input_terminated"):
            body, error = _read_at_most(environ["wsgi.input"], self.max_bytes + 1)
            del environ["HTTP_TRANSFER_ENCODING"]  # Werkzeug ignores the length of a chunked one
            environ.pop("wsgi.input_terminated")
        elif declared is not None and 0 < declared <= self.max_bytes:  # past it: 413 unread
            body, error = _read_at_most(environ["wsgi.input"], declared)
            if not error and len(body) < declared:
                error = (
                    f"the body ended after {len(body)} of the {declared} bytes its "
                    "Content-Length announced (the connection was closed early)"
                )
        else:
            return self.app(environ, start_response)
        if error:
            environ[UNREAD] = f"{error}: nothing was sent"
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def refuse_unread(app: Flask) -> None:
    """Answer 400 (JSON) to any request whose body :class:`BodyReader` could not read whole,
    before its view runs (or a 405 is answered)."""
    app.before_request(refuse_partial_body)


def refuse_partial_body() -> None:
    """The ``before_request`` hook of :func:`refuse_unread`."""
    unread = request.environ.get(UNREAD)
    if unread:
        raise BadMessage(400, unread)


def load_json(raw: bytes) -> Any:
    """The JSON value of a request body, or :class:`BadMessage` (400) saying why not."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadMessage(400, f"the body is not valid JSON: {exc}") from None
    except ValueError:  # the only other one json raises: an integer past int_max_str_digits
        raise BadMessage(400, too_many_digits()) from None


def too_many_digits() -> str:
    """Why an integer was refused: Python's limit on the digits of an integer it parses."""
    limit = sys.get_int_max_str_digits()
    return (
        f"the body holds an integer of more than {limit} digits: the bus carries integers of "
        f"at most {limit} digits (Python's int_max_str_digits, which bounds the CPU time a "
        "number costs to parse); send a longer number as a string"
    )


def _content_length(environ: WSGIEnvironment) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def _read_at_most(stream: IO[bytes], limit: int) -> tuple[bytes, str]:
    """Up to ``limit`` bytes of ``stream`` (fewer if it ends first), and why reading failed
    ("" if it did not)."""
    parts: list[bytes] = []
    left = limit
    try:
        while left > 0:
            data = stream.read(min(left, 65536))
            if not data:
                break
            parts.append(data)
            left -= len(data)
    # The server's own errors, which the app cannot name without importing the server:
    # gunicorn raises NoMoreData (an OSError) for a connection closed mid-body, and a
    # ParseException for broken chunk framing.
    except Exception as exc:
        return b"", f"the body could not be read whole ({type(exc).__name__}: {exc})"
    return b"".join(parts), ""
