"""``/prodcons`` and ``/pubsub``: the HTTP producers.

POST with a JSON body ``{"payload": <any JSON>, "queue"|"channel": <optional name>}`` answers
202 with the message id, what Redis said (queue depth, or receivers: 0 means nobody heard it),
and the envelope's ``src`` and ``seq``. ``/prodcons`` also takes ``"delay_s"`` (seconds from
now) or ``"not_before"`` (Unix time, seconds): the message waits in ``bus:{q}:delayed`` until
then, and the answer says ``"scheduled"`` (how many wait) and ``"due_ms"`` instead of the depth;
and ``"track": true``: the bus keeps a status record of the message (``GET /api/messages/<id>``),
and the answer says ``"tracked": true``. Queues in ``BUS_TRACK_QUEUES`` track every message.
A form POST (the index page without JavaScript) and a plain GET (any HTTP load tool, a link)
send a message too and redirect (303) to ``/``, as the seed articles' endpoints did.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, redirect, request
from flask.typing import ResponseReturnValue

from producer import Sent
from web.auth import require_token
from web.bus import get_bus
from web.errors import BadMessage
from web.limits import load_json, too_many_digits

bp = Blueprint("producers", __name__)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
RESULT = {"queue": "depth", "channel": "receivers"}  # what Redis answered, by destination
FAILED = "bus.fastpath.failed"  # environ key: the fast path's send raised this
DELAY_FIELDS = ("delay_s", "not_before")
PUSH_FIELDS = (*DELAY_FIELDS, "track")
MAX_DELAY_S = 366 * 86400  # a delay past a year is a mistake, not a schedule


@bp.get("/prodcons")
def prodcons_get() -> ResponseReturnValue:
    """Push a random number onto the default queue and go back to the index page."""
    bus = get_bus()
    _no_seed_get(bus.settings.api_token)
    bus.get_producer().push(random.randint(0, 1_000_000), bus.settings.queues[0])
    return redirect("/", 303)


@bp.get("/pubsub")
def pubsub_get() -> ResponseReturnValue:
    """Publish a random number on the default channel and go back to the index page."""
    bus = get_bus()
    _no_seed_get(bus.settings.api_token)
    bus.get_producer().publish(random.randint(0, 1_000_000), bus.settings.channels[0])
    return redirect("/", 303)


@bp.post("/prodcons")
def prodcons_post() -> ResponseReturnValue:
    """LPUSH one message; 202 ``{"id", "queue", "depth", "src", "seq"}`` (and ``"tracked":
    true`` for a tracked one)."""
    bus = get_bus()
    require_token(bus.settings.api_token, form_field=True)
    payload, queue, from_form, options = read_message("queue", bus.settings.queues, PUSH_FIELDS)
    track = options.pop("track", None)
    if track is not None and not isinstance(track, bool):
        raise BadMessage(400, "'track' must be true or false")
    delay = check_delay(options)
    push = partial(bus.get_producer().push, track=track)
    if delay:
        push = partial(push, delay_s=delay.get("delay_s"), not_before=delay.get("not_before"))
    sent = _send(push, payload, queue)
    if from_form:
        return redirect("/", 303)
    if delay:
        env = sent.envelope
        body = {"id": env.id, "queue": queue, "scheduled": sent.result, "due_ms": sent.due_ms,
                "src": env.src, "seq": env.seq}  # fmt: skip
        if env.track:
            body["tracked"] = True
        return body, 202
    return accepted("queue", queue, sent), 202


@bp.post("/pubsub")
def pubsub_post() -> ResponseReturnValue:
    """PUBLISH one message; 202 ``{"id", "channel", "receivers", "src", "seq"}`` (receivers 0:
    nobody received it)."""
    bus = get_bus()
    require_token(bus.settings.api_token, form_field=True)
    payload, channel, from_form, _ = read_message("channel", bus.settings.channels)
    sent = _send(bus.get_producer().publish, payload, channel)
    if from_form:
        return redirect("/", 303)
    return accepted("channel", channel, sent), 202


def _no_seed_get(token: str) -> None:
    if token:
        raise BadMessage(
            403,
            "sending with GET is off while BUS_API_TOKEN is set (a link could send): POST with "
            "the token",
        )


def accepted(dest_field: str, name: str, sent: Sent) -> dict[str, Any]:
    """The 202's body: the message id, where it went, what Redis said (``depth`` or
    ``receivers``), and the envelope's ``src`` and ``seq``: what a subscriber's gap count
    refers to."""
    env = sent.envelope
    body = {"id": env.id, dest_field: name, RESULT[dest_field]: sent.result, "src": env.src,
            "seq": env.seq}  # fmt: skip
    if env.track:
        body["tracked"] = True
    return body


def _send(send: Callable[[Any, str], Sent], payload: Any, name: str) -> Sent:
    """``send(payload, name)``, unless the fast path (:mod:`web.fastpath`) already tried and
    failed: then its error is raised here, to be answered like any other."""
    failed = request.environ.pop(FAILED, None)
    if failed is not None:
        raise failed
    return send(payload, name)


def read_message(
    dest_field: str, allowed: tuple[str, ...], extras: tuple[str, ...] = ()
) -> tuple[Any, str, bool, dict[str, Any]]:
    """Validate the request: (payload, destination name, came from a form, the ``extras``
    fields it holds)."""
    raw = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    if request.mimetype in FORM_TYPES and "payload" in request.form:
        body: dict[str, Any] = {"payload": _form_value(request.form["payload"])}
        if request.form.get(dest_field):
            body[dest_field] = request.form[dest_field]
        from_form = True
    else:
        body = load_json(raw)
        from_form = False
    payload, name = check_body(body, dest_field, allowed, extras)
    return payload, name, from_form, {k: body[k] for k in extras if k in body}


def check_body(
    body: Any, dest_field: str, allowed: tuple[str, ...], extras: tuple[str, ...] = ()
) -> tuple[Any, str]:
    """A parsed body's (payload, destination name), or :class:`BadMessage`. ``extras``: other
    fields the caller reads itself."""
    if not isinstance(body, dict):
        raise BadMessage(400, 'the body must be a JSON object like {"payload": ...}')
    unknown = sorted(set(body) - {"payload", dest_field, *extras})
    if unknown:
        expected = ", ".join(f"'{f}'" for f in ("payload", dest_field, *extras))
        raise BadMessage(400, f"unknown fields {unknown}; expected {expected}")
    if "payload" not in body:
        raise BadMessage(400, "the field 'payload' is required (any JSON value)")
    name = body.get(dest_field, allowed[0])
    if not isinstance(name, str):
        raise BadMessage(400, f"'{dest_field}' must be a string")
    if name not in allowed:
        raise BadMessage(404, f"unknown {dest_field} {name!r}", allowed=list(allowed))
    return body["payload"], name


def check_delay(options: dict[str, Any]) -> dict[str, float]:
    """``{"delay_s": s}`` or ``{"not_before": t}`` for the producer, checked; ``{}`` for none."""
    if len(options) > 1:
        raise BadMessage(400, "give 'delay_s' or 'not_before', not both")
    for field, value in options.items():
        # Compared as they are (value != value: NaN): an integer of 400 digits is simply out
        # of range, where float() or math.isfinite() of it would raise OverflowError.
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            raise BadMessage(400, f"'{field}' must be a number of seconds")
        if field == "delay_s" and not 0 <= value <= MAX_DELAY_S:
            raise BadMessage(400, f"'delay_s' must be between 0 and {MAX_DELAY_S} (a year)")
        if field == "not_before" and not 0 <= value <= latest_not_before():
            raise BadMessage(
                400, "'not_before' must be a Unix time in seconds, at most a year from now"
            )
        return {field: float(value)}
    return {}


def latest_not_before() -> int:
    """The latest ``not_before`` accepted: a year from the start of the next hour (a bound that
    moves once an hour, so /openapi.json can state it)."""
    return (int(time.time()) // 3600 + 1) * 3600 + MAX_DELAY_S


def _form_value(text: str) -> Any:
    """A form field holding strict JSON is sent as that JSON value; anything else as a string."""
    try:
        return json.loads(text, parse_constant=_refuse)
    except (json.JSONDecodeError, NotStrict, RecursionError):
        return text
    except ValueError:  # an integer past int_max_str_digits: JSON, but not one the bus carries
        raise BadMessage(400, too_many_digits()) from None


class NotStrict(ValueError):
    """NaN, Infinity or -Infinity: Python's parser takes them, strict JSON has no such value."""


def _refuse(name: str) -> Any:
    raise NotStrict(f"{name} is not strict JSON")
