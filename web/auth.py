"""The API token (``BUS_API_TOKEN``).

With a token set, whatever changes the bus asks for it: ``POST /prodcons`` and ``/pubsub``
(``Authorization: Bearer <token>``, or the form's ``token`` field for the page without
JavaScript, which also makes a forged cross-site form post fail) and the dead letters' requeue.
The seed-style ``GET /prodcons`` and ``GET /pubsub`` are refused (403): a link or an image tag
could trigger them. Comparisons take constant time. Reads stay open (see docs/security.md).
"""

from __future__ import annotations

import hmac

from flask import request

from web.errors import BadMessage


def same_token(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token``, in time that does not depend on where they differ."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def require_token(token: str, form_field: bool = False) -> None:
    """Refuse the request (401) unless it carries ``token`` (no-op when ``token`` is empty); a
    form post may carry it in its ``token`` field when ``form_field``."""
    if not token:
        return
    given = bearer(request.headers.get("Authorization"))
    if given is None and form_field:
        given = request.form.get("token")
    if not same_token(given, token):
        raise Unauthorized()


class Unauthorized(BadMessage):
    """401 with a ``WWW-Authenticate`` challenge."""

    def __init__(self) -> None:
        super().__init__(
            401,
            "this endpoint needs the API token: send 'Authorization: Bearer <BUS_API_TOKEN>'",
        )

    extra_headers = {"WWW-Authenticate": 'Bearer realm="redis-bus"'}
