"""What a message request may say, and the checks that refuse it (:class:`BadMessage`) before
anything is sent: its fields, its destination, its delay, its time limit, a form field's
value."""

from __future__ import annotations

import json
import time
from typing import Any

from producer.errors import BusError
from producer.settings.checks import MAX_TIMEOUT_S
from producer.store import after, once
from producer.store.envelope import MAX_PRIORITY
from producer.store.envelope import check_priority as check_priority_n
from producer.store.envelope import check_timeout as check_timeout_s
from web.errors import BadMessage
from web.limits import too_many_digits

DELAY_FIELDS = ("delay_s", "not_before")
# What a push may carry beside payload and queue.
PUSH_FIELDS = (*DELAY_FIELDS, "track", "timeout_s", "priority", "after")
MAX_DELAY_S = 366 * 86400  # a delay past a year is a mistake, not a schedule


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


def check_track(body: dict[str, Any]) -> bool | None:
    """A push's ``"track"`` field: true, false, or None when absent."""
    track = body.get("track")
    if track is not None and not isinstance(track, bool):
        raise BadMessage(400, "'track' must be true or false")
    return track


def check_timeout(body: dict[str, Any]) -> float | None:
    """A push's ``"timeout_s"``: its own time limit in seconds, or None when absent (or null:
    the worker's ``BUS_HANDLER_TIMEOUT_S`` applies)."""
    try:
        return check_timeout_s(body.get("timeout_s"))
    except ValueError:
        raise BadMessage(
            400,
            f"'timeout_s' must be a number of seconds > 0 and at most {MAX_TIMEOUT_S} (7 days)",
        ) from None


def check_priority(body: dict[str, Any]) -> int:
    """A push's ``"priority"``: its level in the queue, 0 (the default, also when absent or
    null) to 9 (the highest). A number written with a fraction of zero (``2.0``) is that
    integer, as JSON Schema counts it."""
    priority = body.get("priority")
    if isinstance(priority, float) and priority.is_integer() and 0 <= priority <= MAX_PRIORITY:
        priority = int(priority)
    try:
        return check_priority_n(priority)
    except ValueError:
        raise BadMessage(
            400,
            f"'priority' must be an integer from 0 (the default) to {MAX_PRIORITY} (the highest)",
        ) from None


def refuse_queue_options(body: Any) -> None:
    """A publish's body asking for a time limit or a priority: refused, since only a queue's
    worker keeps them (a subscriber's handler runs without a limit, each message as it
    comes)."""
    if isinstance(body, dict) and "timeout_s" in body:
        raise BadMessage(
            400,
            "'timeout_s': time limits apply to queue messages only (POST /prodcons); a "
            "subscriber's handler has no time limit",
        )
    if isinstance(body, dict) and "after" in body:
        raise BadMessage(
            400,
            "'after': only a queue message waits for others (POST /prodcons); a subscriber "
            "receives each message as it is published",
        )
    if isinstance(body, dict) and "priority" in body:
        raise BadMessage(
            400,
            "'priority': priorities apply to queue messages only (POST /prodcons); a "
            "subscriber receives each message as it is published",
        )


def check_after(body: dict[str, Any], queue: str,
                queues: tuple[str, ...]) -> list[tuple[str, str]] | None:  # fmt: skip
    """A push's ``"after"``: the messages it waits for, each an id (of its own queue) or
    ``{"queue": ..., "id": ...}`` on one of ``queues``; None when absent (or null). Not with
    a delay or ``"track": false``."""
    given = body.get("after")
    if given is None:
        return None
    if not isinstance(given, list):
        raise BadMessage(400, '\'after\' must be a list of message ids or {"queue", "id"}')
    if any(field in body for field in DELAY_FIELDS):
        raise BadMessage(400, "'after' cannot be combined with 'delay_s' or 'not_before'")
    if body.get("track") is False:
        raise BadMessage(400, "a message with 'after' is tracked: leave out 'track': false")
    try:
        needs = after.parse(given, queue)
    except ValueError as exc:
        raise BadMessage(400, f"'after': {str(exc).removeprefix('after: ')}") from None
    for q, _ in needs:
        if q not in queues:
            raise BadMessage(400, f"'after': unknown queue {q!r}; queues: {', '.join(queues)}")
    return needs


def check_delay(body: dict[str, Any]) -> dict[str, float]:
    """``{"delay_s": s}`` or ``{"not_before": t}`` for the producer, checked; ``{}`` for none."""
    options = {field: body[field] for field in DELAY_FIELDS if field in body}
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


def form_value(text: str) -> Any:
    """A form field holding strict JSON is sent as that JSON value; anything else as a string."""
    try:
        return json.loads(text, parse_constant=_refuse)
    except (json.JSONDecodeError, NotStrict, RecursionError):
        return text
    except ValueError:  # an integer past int_max_str_digits: JSON, but not one the bus carries
        raise BadMessage(400, too_many_digits()) from None


class NotStrict(BusError, ValueError):
    """NaN, Infinity or -Infinity: Python's parser takes them, strict JSON has no such value."""


def _refuse(name: str) -> Any:
    raise NotStrict(f"{name} is not strict JSON")


def check_key(header: str | None) -> str | None:
    """The request's ``Idempotency-Key`` header, checked (None: no header), or 400 saying why
    :func:`producer.store.once.check_key` refuses it."""
    if header is None:
        return None
    try:
        return once.check_key(header)
    except ValueError as exc:
        raise BadMessage(400, f"Idempotency-Key: {exc}") from None
