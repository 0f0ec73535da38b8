"""The envelope every message travels in: compact UTF-8 JSON, never pickle.

A public format (docs/wire-format.md, and ``envelope.schema.json`` beside this module): any
language may LPUSH or PUBLISH one. Required: ``v`` (1), ``id`` (a non-empty string) and
``payload`` (any JSON). Optional: ``src`` + ``seq`` (a producer id and its per-destination count
from 1: with them a subscriber counts exactly what it missed), ``ts`` (ms since the epoch: the
end-to-end latency), ``mode`` (default: where the message was read), ``attempt`` (0 or
absent: the first delivery), ``track`` (``true``: the bus keeps a status record of it, see
:mod:`producer.store.tracking`) and ``timeout_s`` (seconds, > 0 and at most
:data:`~producer.settings.checks.MAX_TIMEOUT_S`: the time limit of each attempt of the
handler, in place of ``BUS_HANDLER_TIMEOUT_S``) and ``priority`` (an integer from 0, the default, to
:data:`MAX_PRIORITY`: its level in the queue, where a worker takes the highest first; see
:mod:`producer.store.keys`). ``null`` for an optional field means absent.
Unknown fields are ignored, and not kept when a message is written again (retry, recovery,
requeue).

On the Python side an :class:`Envelope` always has every attribute: ``src`` ``""`` and ``seq``
0 mean "not set", ``ts`` 0 means unknown, ``attempt`` is at least 1, ``track`` is a bool,
``timeout_s`` a float or None (not set: the worker's setting applies), ``priority`` an int.

What cannot be handled as meant raises :class:`EnvelopeError` (the consumer dead-letters it):
not UTF-8 JSON, not an object, ``v`` not 1, ``id`` or ``payload`` missing, a ``mode`` or
``track`` it cannot read. The accounting fields (``src``, ``seq``, ``ts``, ``attempt``) only
feed the bus's own counts: one out of range or of the wrong type (a foreign producer's
``"seq": 0``, ``"ts": "abc"``, a ``src`` without ``seq``) is ignored, as if absent, and the
message is valid work. So is a ``timeout_s`` that is not a number in its range: the worker's
own limit applies; and a ``priority`` that is not an integer from 0 to 9: priority 0.
:func:`decode_noting` says which were ignored; :func:`decode` tells the sink the decoding thread
installed with :func:`report_ignored_fields_to` (a daemon counts them and logs), or logs at
DEBUG.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import orjson

from producer.errors import EnvelopeError, PayloadError
from producer.settings.checks import MAX_TIMEOUT_S
from producer.store.fields import MAX_PRIORITY as MAX_PRIORITY
from producer.store.fields import MODES as MODES
from producer.store.fields import VERSION as VERSION
from producer.store.fields import check_priority as check_priority
from producer.store.fields import check_timeout as check_timeout
from producer.store.fields import checked, good_priority, good_timeout

log = logging.getLogger(__name__)
# orjson does the work; the standard library's json is the reference it is checked against and
# the fallback for what orjson would do differently (see encode() and _loads()).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
# 19 digits in a row may be an integer orjson would read as a float (past 2**64 - 1, or below
# -2**63: -9223372036854775809 has 19 digits): such bytes go to the standard library, which
# keeps integers exact. Found by mapping every digit to
# "0" and anything else to " " (one C pass), then a substring search: far cheaper than a regex.
_DIGITS_TO_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_DIGITS = b"0" * 19


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message with its bookkeeping (``src`` "" and ``seq`` 0: not set; ``ts`` 0: unknown;
    ``timeout_s`` None: the worker's ``BUS_HANDLER_TIMEOUT_S`` applies)."""

    id: str
    src: str
    seq: int
    ts: int
    mode: str
    payload: Any
    attempt: int = 1
    v: int = VERSION
    track: bool = False
    timeout_s: float | None = None
    priority: int = 0

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


def new(payload: Any, *, src: str = "", seq: int = 0, mode: str = "prodcons", track: bool = False,
        attempt: int = 1, timeout_s: float | None = None,
        priority: int = 0) -> Envelope:  # fmt: skip
    """A fresh envelope for ``payload`` (a new id, stamped now): what a producer sends, and
    what a handler's unit test can call it with (``producer.new_envelope``). ``timeout_s`` is
    taken as it is: :func:`check_timeout` and :func:`check_priority` are the caller's to run."""
    return Envelope(id=uuid.uuid4().hex, src=src, seq=seq, ts=now_ms(), mode=mode,
                    payload=payload, track=track, attempt=attempt,
                    timeout_s=None if timeout_s is None else float(timeout_s),
                    priority=priority)  # fmt: skip


def encode(env: Envelope) -> bytes:
    """Compact JSON of ``env``; raises :class:`PayloadError` if the payload is not strict JSON."""
    # A literal dict, not dataclasses.asdict(), which deep-copies the payload on every send.
    obj: dict[str, Any] = {"v": env.v, "id": env.id}
    # What is not set is left out rather than written as "" or 0, which the format refuses.
    if env.src:
        obj["src"], obj["seq"] = env.src, env.seq
    if env.ts:
        obj["ts"] = env.ts
    obj["mode"], obj["attempt"] = env.mode, env.attempt
    if env.track:
        obj["track"] = True
    if env.timeout_s is not None:
        obj["timeout_s"] = env.timeout_s
    if env.priority:
        obj["priority"] = env.priority
    obj["payload"] = env.payload
    try:
        out = orjson.dumps(obj)
    except TypeError:  # a key not a string, an integer past 64 bits, a lone surrogate...
        out = b"null"  # ...which the standard library decides: convert or refuse
    if b"null" not in out:
        return out
    # orjson writes NaN and Infinity as null, where strict JSON has no way to say them: the
    # standard library refuses them (and writes any real null the same way orjson does).
    try:
        return _ENCODER.encode(obj).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise PayloadError(f"the payload is not strict JSON: {exc}") from None


def _loads(data: bytes) -> Any:
    """Strict JSON (no NaN, no Infinity), integers of any size kept exact."""
    if _LONG_DIGITS not in data.translate(_DIGITS_TO_ZERO):
        return orjson.loads(data)
    return _DECODER.decode(data.decode("utf-8"))


class _Ours(msgspec.Struct):
    """What this bus's producers write: every field present (``track`` and ``timeout_s`` aside),
    each of its JSON type, checked and decoded in one C pass (msgspec; integers of any size
    stay exact). The ranges are :func:`decode`'s to check."""

    v: int
    id: str
    src: str
    seq: int
    ts: int
    mode: str
    attempt: int
    payload: Any
    track: bool = False
    timeout_s: float | None = None
    priority: int = 0


_OURS = msgspec.json.Decoder(_Ours)
_NOT_OURS = msgspec.MsgspecError


def decode(raw: bytes | str, *, default_mode: str = "prodcons") -> Envelope:
    """Parse ``raw``; raise :class:`EnvelopeError` (carrying ``raw``) if it cannot be handled.

    ``default_mode`` is the mode of an envelope that names none: where it was read from.
    Accounting fields out of range or of the wrong type are ignored (see the module's
    docstring) and reported to this thread's sink (:func:`report_ignored_fields_to`)."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if type(data) is not bytes:
        data = bytes(data)
    # The hot path of every consumer: what this bus's producers write, in range, is taken as
    # it is; anything else (an error of any kind here included) takes the reference path
    # below, which names the fault or notes what it ignored.
    # msgspec skips an unknown field unread, bytes that are not UTF-8 included: such bytes are
    # the reference path's to refuse (isascii() is the cheap test, one C pass).
    try:
        w = _OURS.decode(data)
        if not data.isascii():
            data.decode("utf-8")
    except (_NOT_OURS, UnicodeDecodeError):
        pass
    else:
        timeout_s = w.timeout_s
        if (
            w.v == VERSION and w.id and w.src and w.seq >= 1 and w.ts >= 0
            and (w.mode == "prodcons" or w.mode == "pubsub") and w.attempt >= 1
            and (timeout_s is None or 0 < timeout_s <= MAX_TIMEOUT_S)
            and 0 <= w.priority <= MAX_PRIORITY
        ):  # fmt: skip
            return _make(w.id, w.src, w.seq, w.ts, w.mode, w.payload, w.attempt, VERSION,
                         w.track, timeout_s, w.priority)  # fmt: skip
    return _decode_checked(data, default_mode)


def _decode_checked(data: bytes, default_mode: str) -> Envelope:
    """:func:`decode`'s reference path: orjson (the standard library past 64-bit integers),
    then the fields checked one by one."""
    try:
        obj = _loads(data)
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise EnvelopeError(f"not JSON: {exc}", data) from None
    if type(obj) is dict:
        # What this bus's producers write, checked in one expression (the hot path of every
        # consumer); anything else takes the field-by-field checks below, which name the fault.
        get = obj.get
        v, env_id, src, seq = get("v"), get("id"), get("src"), get("seq")
        ts, mode, attempt, track = get("ts"), get("mode"), get("attempt"), get("track")
        timeout_s, priority = get("timeout_s"), get("priority")
        if (
            type(v) is int and v == VERSION
            and type(env_id) is str and env_id
            and type(src) is str and src and type(seq) is int and seq >= 1
            and type(ts) is int and ts >= 0
            and (mode == "prodcons" or mode == "pubsub")
            and type(attempt) is int and attempt >= 1
            and (track is None or track is True or track is False)
            and (timeout_s is None or good_timeout(timeout_s))
            and (priority is None or good_priority(priority))
            and "payload" in obj
        ):  # fmt: skip
            return _make(env_id, src, seq, ts, mode, obj["payload"], attempt, v, track is True,
                         None if timeout_s is None else float(timeout_s),
                         priority or 0)  # fmt: skip
    env, notes = _checked(obj, data, default_mode)
    if notes:
        _report(env, notes)
    return env


def decode_noting(
    raw: bytes | str, *, default_mode: str = "prodcons"
) -> tuple[Envelope, tuple[str, ...]]:
    """As :func:`decode`, with what it ignored: one note per field (``"seq 0 (not an integer
    >= 1)"``), none for an envelope taken as it is. Reported to no sink."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    try:
        obj = _loads(data)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"not JSON: {exc}", data) from None
    return _checked(obj, data, default_mode)


IgnoredSink = Callable[[Envelope, tuple[str, ...]], None]


class _Sinks(threading.local):
    sink: IgnoredSink | None = None


_sinks = _Sinks()


def report_ignored_fields_to(sink: IgnoredSink | None) -> IgnoredSink | None:
    """From now on, :func:`decode` in the calling thread tells ``sink`` (the envelope and its
    notes) when it ignored accounting fields; None: logged at DEBUG. Returns the previous sink.
    A daemon installs one in the thread that consumes (:class:`consumers.daemon.Daemon`)."""
    previous, _sinks.sink = _sinks.sink, sink
    return previous


def _report(env: Envelope, notes: tuple[str, ...]) -> None:
    sink = _sinks.sink
    if sink is None:
        log.debug("message %s: ignored %s", env.id, "; ".join(notes))
    else:
        sink(env, notes)


def _checked(obj: Any, data: bytes, default_mode: str) -> tuple[Envelope, tuple[str, ...]]:
    """:func:`producer.store.fields.checked`, made an Envelope."""
    values, notes = checked(obj, data, default_mode)
    return _make(*values), notes


_FIELDS = ("id", "src", "seq", "ts", "mode", "payload", "attempt", "v", "track", "timeout_s",
           "priority")  # fmt: skip
if Envelope.__slots__ != _FIELDS:  # _make below sets them in this order
    raise RuntimeError(f"Envelope's fields changed: {Envelope.__slots__}")
_S0, _S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8, _S9, _S10 = (
    getattr(Envelope, f).__set__ for f in _FIELDS
)
_new = object.__new__


def _make(env_id: str, src: str, seq: int, ts: int, mode: str, payload: Any, attempt: int,
          v: int, track: bool, timeout_s: float | None, priority: int) -> Envelope:  # fmt: skip
    """An Envelope of already-checked values, without the frozen class's slower __init__ (which
    sets each field through object.__setattr__): the hot path of every consumer."""
    env = _new(Envelope)
    _S0(env, env_id), _S1(env, src), _S2(env, seq), _S3(env, ts)
    _S4(env, mode), _S5(env, payload), _S6(env, attempt), _S7(env, v), _S8(env, track)
    _S9(env, timeout_s), _S10(env, priority)
    return env
