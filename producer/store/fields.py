"""The envelope's fields: their ranges, the checks a producer runs on its options, and the
field-by-field reading of an envelope (the reference path of :func:`producer.store.envelope.decode`,
which says what it refuses and what it ignores)."""

from __future__ import annotations

import json
from typing import Any

from producer.errors import EnvelopeError
from producer.settings.checks import MAX_TIMEOUT_S

VERSION = 1
MAX_PRIORITY = 9  # priority levels: 0 (the default) to 9, the highest
MODES = ("prodcons", "pubsub")


def check_timeout(timeout_s: Any) -> float | None:
    """``timeout_s`` as the envelope carries it (a float, or None for none); ValueError unless
    it is None or a number (not a bool) > 0 and <= ``MAX_TIMEOUT_S`` (NaN and inf are not)."""
    if timeout_s is None:
        return None
    # Compared as it is: an integer of 400 digits is simply out of range, where float() of it
    # would raise OverflowError. NaN fails the comparison too.
    if not good_timeout(timeout_s):
        raise ValueError(
            f"timeout_s must be a number of seconds > 0 and <= {MAX_TIMEOUT_S} (7 days), "
            f"got {timeout_s!r}"
        )
    return float(timeout_s)


def check_priority(priority: Any) -> int:
    """``priority`` as the envelope carries it (None: 0, the default); ValueError unless it is
    an integer (not a bool) from 0 to :data:`MAX_PRIORITY`."""
    if priority is None:
        return 0
    if not good_priority(priority):
        raise ValueError(
            f"priority must be an integer from 0 (the default) to {MAX_PRIORITY}, got {priority!r}"
        )
    return int(priority)


def good_priority(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_PRIORITY


def good_timeout(value: Any) -> bool:
    """Whether ``value`` is a time limit the envelope may carry (bools are not numbers here)."""
    return type(value) is not bool and isinstance(value, int | float) and 0 < value <= MAX_TIMEOUT_S


def checked(obj: Any, data: bytes, default_mode: str) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Every field checked one by one: the envelope's values (in the order of
    :class:`~producer.store.envelope.Envelope`'s fields) and the notes on the optional fields it
    ignored, or an :class:`EnvelopeError` naming what cannot be handled."""
    if type(obj) is not dict:
        raise EnvelopeError(f"not a JSON object but {type(obj).__name__}", data)
    # The version first: a later version may change any other field, and its producer should
    # read that it was refused for its version, not for a field it no longer sends.
    v = obj.get("v")
    if type(v) is not int:
        raise EnvelopeError("field 'v' (the envelope version) missing or not an integer", data)
    if v != VERSION:
        raise EnvelopeError(
            f"unsupported envelope version {v}; this consumer reads version {VERSION}", data
        )
    env_id = obj.get("id")
    if type(env_id) is not str or not env_id:
        raise EnvelopeError("field 'id' missing or not a non-empty string", data)
    if "payload" not in obj:
        raise EnvelopeError("field 'payload' missing", data)
    mode = obj.get("mode")
    if mode is None:
        mode = default_mode
    elif mode not in MODES:
        raise EnvelopeError(f"unknown mode {mode!r}: not one of {', '.join(MODES)}", data)
    track = obj.get("track")
    if track is not None and type(track) is not bool:
        raise EnvelopeError("field 'track' not true or false", data)
    # The accounting fields: what is out of range or of the wrong type is ignored, noted.
    notes: list[str] = []
    src: Any = obj.get("src")
    bad_src = src is not None and (type(src) is not str or not src)
    if bad_src:  # and its seq goes with it, without a note of its own
        notes.append(f"src {shown(src)} (not a non-empty string)")
    seq = accounting_int(obj, "seq", 1, notes)
    if bad_src or seq is False:
        src = seq = None
    elif (src is None) != (seq is None):  # half of the pair cannot be accounted for
        notes.append(f"src {shown(src)} without seq" if seq is None else
                     f"seq {shown(seq)} without src")  # fmt: skip
        src = seq = None
    ts = accounting_int(obj, "ts", 0, notes)
    attempt = accounting_int(obj, "attempt", 0, notes)  # 0 or absent: the first delivery
    timeout_s = obj.get("timeout_s")
    if timeout_s is not None:
        if good_timeout(timeout_s):
            timeout_s = float(timeout_s)
        else:  # the worker's own limit applies
            notes.append(f"timeout_s {shown(timeout_s)} (not a number > 0 and <= {MAX_TIMEOUT_S})")
            timeout_s = None
    priority = obj.get("priority")
    if priority is not None and not good_priority(priority):  # its queue's default level
        notes.append(f"priority {shown(priority)} (not an integer from 0 to {MAX_PRIORITY})")
        priority = None
    values = (env_id, src or "", seq or 0, ts or 0, mode, obj["payload"], attempt or 1, v,
              bool(track), timeout_s, priority or 0)  # fmt: skip
    return values, tuple(notes)


def accounting_int(obj: dict[str, Any], name: str, minimum: int, notes: list[str]) -> Any:
    """``obj[name]`` if set (not absent, not null) and an integer >= ``minimum``; None if not
    set; False, with a note, if set to anything else (ignored)."""
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is not int or value < minimum:  # `type is`, so True is not an int here
        notes.append(f"{name} {shown(value)} (not an integer >= {minimum})")
        return False
    return value


def shown(value: Any) -> str:
    """A field's value for a note, bounded (a foreign producer may write anything there)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
