"""The body size limit, whatever the framing: a chunked body is measured like any other."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class ChunkedBodyLimit:
    """WSGI middleware: reads a chunked body (no Content-Length) up to one byte past
    ``max_bytes`` and hands it on with a Content-Length, so Flask answers 413 past the limit.

    Werkzeug limits such a stream to ``MAX_CONTENT_LENGTH`` by stopping at the limit: a longer
    body is cut short without an error, and a cut body that still parses would be accepted.
    """

    def __init__(self, app: WSGIApplication, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        # Only a server that ends the stream at the last chunk (gunicorn, Werkzeug's) can be
        # read to its end; elsewhere Werkzeug gives the app an empty body, as it always did.
        if chunked and environ.get("wsgi.input_terminated"):
            body = _read_at_most(environ["wsgi.input"], self.max_bytes + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]  # Werkzeug ignores the length of a chunked one
            environ.pop("wsgi.input_terminated")
        return self.app(environ, start_response)


def _read_at_most(stream: IO[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    left = limit
    while left > 0:
        data = stream.read(min(left, 65536))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)
