"""The envelope every message travels in: compact UTF-8 JSON, never pickle.

A public format (README "Wire format", and ``envelope.schema.json`` beside this module): any
language may LPUSH or PUBLISH one. Required: ``v`` (1), ``id`` (a non-empty string) and
``payload`` (any JSON). Optional: ``src`` + ``seq`` (a producer id and its per-destination count
from 1: with them a subscriber counts exactly what it missed), ``ts`` (ms since the epoch: the
end-to-end latency), ``mode`` (default: where the message was read) and ``attempt`` (0 or
absent: the first delivery). ``null`` for an optional field means absent. Unknown fields are
ignored, and not kept when a message is written again (retry, recovery, requeue).

On the Python side an :class:`Envelope` always has every attribute: ``src`` ``""`` and ``seq``
0 mean "not set", ``ts`` 0 means unknown, ``attempt`` is at least 1.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

VERSION = 1
MODES = ("prodcons", "pubsub")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()


class EnvelopeError(ValueError):
    """Bytes that are not a valid envelope; ``raw`` keeps them for the dead-letter list."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class PayloadError(ValueError):
    """A payload strict UTF-8 JSON cannot carry (NaN, Infinity, a lone surrogate, an object)."""


@dataclass(frozen=True)
class Envelope:
    """One message with its bookkeeping (``src`` "" and ``seq`` 0: not set; ``ts`` 0: unknown)."""

    id: str
    src: str
    seq: int
    ts: int
    mode: str
    payload: Any
    attempt: int = 1
    v: int = VERSION

    def encode(self) -> bytes:
        """Compact JSON bytes, the form stored in Redis."""
        return encode(self)

    def next_attempt(self) -> Envelope:
        """The same message, marked as delivered once more."""
        return replace(self, attempt=self.attempt + 1)

    def age_ms(self, at_ms: int | None = None) -> int:
        """Milliseconds since the producer stamped the message (meaningless if ``ts`` is 0)."""
        return (at_ms if at_ms is not None else now_ms()) - self.ts


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (comparable across processes)."""
    return time.time_ns() // 1_000_000


def new(payload: Any, *, src: str, seq: int, mode: str) -> Envelope:
    """A fresh envelope for ``payload``."""
    return Envelope(id=uuid.uuid4().hex, src=src, seq=seq, ts=now_ms(), mode=mode, payload=payload)


def encode(env: Envelope) -> bytes:
    """Compact JSON of ``env``; raises :class:`PayloadError` if the payload is not strict JSON."""
    # A literal dict, not dataclasses.asdict(), which deep-copies the payload on every send.
    obj: dict[str, Any] = {"v": env.v, "id": env.id}
    # What is not set is left out rather than written as "" or 0, which the format refuses.
    if env.src:
        obj["src"], obj["seq"] = env.src, env.seq
    if env.ts:
        obj["ts"] = env.ts
    obj["mode"], obj["attempt"], obj["payload"] = env.mode, env.attempt, env.payload
    try:
        return _ENCODER.encode(obj).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise PayloadError(f"the payload is not strict JSON: {exc}") from None


def decode(raw: bytes | str, *, default_mode: str = "prodcons") -> Envelope:
    """Parse ``raw``; raise :class:`EnvelopeError` (carrying ``raw``) if it is not an envelope.

    ``default_mode`` is the mode of an envelope that names none: where it was read from."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EnvelopeError(f"not JSON: {exc}", data) from None
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
    src = obj.get("src")
    if src is not None and (type(src) is not str or not src):
        raise EnvelopeError("field 'src' not a non-empty string", data)
    seq = _optional_int(obj, "seq", 1, data)
    if (src is None) != (seq is None):
        # Half of the pair cannot be accounted for; refusing says so, ignoring it would not.
        raise EnvelopeError("fields 'src' and 'seq' go together: set both or neither", data)
    ts = _optional_int(obj, "ts", 0, data)
    attempt = _optional_int(obj, "attempt", 0, data)
    mode = obj.get("mode")
    if mode is None:
        mode = default_mode
    elif mode not in MODES:
        raise EnvelopeError(f"unknown mode {mode!r}: not one of {', '.join(MODES)}", data)
    return Envelope(
        id=env_id,
        src=src or "",
        seq=seq or 0,
        ts=ts or 0,
        mode=mode,
        payload=obj["payload"],
        attempt=attempt or 1,  # 0 or absent: a producer's "first delivery"
        v=v,
    )


def _optional_int(obj: dict[str, Any], name: str, minimum: int, data: bytes) -> int | None:
    """``obj[name]`` if set (not absent, not null); an integer >= ``minimum`` or garbage."""
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is not int or value < minimum:  # `type is`, so True is not an int here
        raise EnvelopeError(f"field {name!r} not an integer >= {minimum}", data)
    return value
