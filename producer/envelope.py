"""The envelope every message travels in: compact UTF-8 JSON, never pickle.

``{"v":1,"id":<uuid hex>,"src":<producer id>,"seq":<int>,"ts":<ms>,"mode":...,
"attempt":<int>,"payload":<any JSON>}``

``src`` + ``seq`` let a subscriber count exactly what it missed: ``seq`` grows by one per
message a producer process sends to one destination (queue or channel). ``ts`` gives end-to-end
latency and ``attempt`` counts deliveries (1 on the first).
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
_FIELDS = {"v": int, "id": str, "src": str, "seq": int, "ts": int, "mode": str, "attempt": int}


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
    """One message with its bookkeeping."""

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
        """Milliseconds since the producer stamped the message."""
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
    obj = {
        "v": env.v, "id": env.id, "src": env.src, "seq": env.seq, "ts": env.ts,
        "mode": env.mode, "attempt": env.attempt, "payload": env.payload,
    }  # fmt: skip
    try:
        return _ENCODER.encode(obj).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise PayloadError(f"the payload is not strict JSON: {exc}") from None


def decode(raw: bytes | str) -> Envelope:
    """Parse ``raw``; raise :class:`EnvelopeError` (carrying ``raw``) if it is not an envelope."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EnvelopeError(f"not JSON: {exc}", data) from None
    if type(obj) is not dict:
        raise EnvelopeError(f"not a JSON object but {type(obj).__name__}", data)
    for name, kind in _FIELDS.items():
        if type(obj.get(name)) is not kind:  # `type is`, so True is not an int here
            raise EnvelopeError(f"field {name!r} missing or not {kind.__name__}", data)
    if "payload" not in obj:
        raise EnvelopeError("field 'payload' missing", data)
    if obj["v"] != VERSION:
        raise EnvelopeError(f"unsupported version {obj['v']}", data)
    if obj["mode"] not in MODES:
        raise EnvelopeError(f"unknown mode {obj['mode']!r}", data)
    if obj["attempt"] < 1 or obj["seq"] < 0:
        raise EnvelopeError("attempt must be >= 1 and seq >= 0", data)
    return Envelope(
        id=obj["id"],
        src=obj["src"],
        seq=obj["seq"],
        ts=obj["ts"],
        mode=obj["mode"],
        payload=obj["payload"],
        attempt=obj["attempt"],
        v=obj["v"],
    )
