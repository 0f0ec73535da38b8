"""The decoder's hot path (msgspec, for what this bus's producers write) never disagrees with its
reference path (orjson, then every field checked one by one): for any bytes, :func:`decode` gives
the same envelope (to the type of every number in the payload), the same error, and the same
notes on ignored fields as the reference alone. The hot path may only decline, never decide
differently.

Bytes come from envelopes with every field drawn from valid, edge and wrong values (absent,
null, bools for numbers, floats for integers, 0, negatives, integers past 64 bits, empty
strings), payloads of any JSON (integers past 64 bits, deep nesting, escapes), written compact,
spaced, with a key twice, and then cut or altered.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from producer.errors import EnvelopeError
from producer.store import envelope
from producer.store.envelope import _decode_checked, decode, report_ignored_fields_to

BIG = 2**64 + 1
ABSENT = object()

INTS = st.sampled_from([0, 1, 2, 42, -1, BIG, -BIG, 10**400, 1.0, 1.5, True, False, "1", None])
FIELDS = {
    "v": st.sampled_from([1, 1, 1, 2, 0, 1.0, True, "1", None, BIG]),
    "id": st.sampled_from(["abc", "7fc246a952694b71", "", 1, None, "\u00e9\u65e5"]),
    "src": st.sampled_from(["web-1", "x", "", 0, None, False]),
    "seq": INTS,
    "ts": st.one_of(INTS, st.just(1796671420741)),
    "mode": st.sampled_from(["prodcons", "pubsub", "other", "", None, 1]),
    "attempt": INTS,
    "track": st.sampled_from([True, False, None, 0, 1, "true"]),
    "timeout_s": st.sampled_from([None, 0, 0.5, 2, -1, 604800, 604800.5, 10**400, True, "1"]),
    "priority": st.sampled_from([None, 0, 1, 5, 9, 10, -1, 5.0, True, "5", BIG]),
}
# What this bus's producers write (the payload aside).
OWN = {"v": 1, "id": "7fc246a952694b71", "src": "web-1", "seq": 3, "ts": 1796671420741,
       "mode": "prodcons", "attempt": 1}  # fmt: skip
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))  # fmt: skip


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)


JSON = st.recursive(SCALARS, _nested, max_leaves=12)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """The bytes of an envelope-like object: half of them this bus's own with up to two fields
    changed or dropped, the rest with each field present (a drawn value) or absent."""
    obj: dict[str, Any] = {}
    if draw(st.booleans()):
        obj = dict(OWN)
        for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2)):
            if draw(st.booleans()):
                obj[name] = draw(FIELDS[name])
            else:
                obj.pop(name, None)
    else:
        for name, values in FIELDS.items():
            if draw(st.booleans()) or name in ("v", "id"):
                obj[name] = draw(values)
    if draw(st.integers(0, 9)):  # now and then no payload
        obj["payload"] = draw(JSON)
    if draw(st.booleans()):
        obj = {k: obj[k] for k in draw(st.permutations(list(obj)))}
    text = json.dumps(obj, separators=(",", ":") if draw(st.booleans()) else (", ", ": "),
                      ensure_ascii=draw(st.booleans()))  # fmt: skip
    if obj and draw(st.integers(0, 5)) == 0:  # a key twice: the last one counts
        key = draw(st.sampled_from(sorted(obj)))
        text = text[:-1] + f",{json.dumps(key)}:{json.dumps(draw(FIELDS.get(key, JSON)))}" + "}"
    data = text.encode()
    cut = draw(st.integers(0, 12))
    if cut == 0 and data:  # cut short
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif cut == 1:  # a byte changed
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data


def outcome(decoder: Any, data: bytes) -> tuple[str, ...]:
    """What ``decoder`` makes of ``data``: the envelope's repr (ints and floats told apart) and
    the notes it reported, or the error's reason."""
    notes: list[tuple[str, ...]] = []
    previous = report_ignored_fields_to(lambda env, found: notes.append(found))
    try:
        env = decoder(data)
    except EnvelopeError as exc:
        return ("refused", exc.reason)
    finally:
        report_ignored_fields_to(previous)
    return ("decoded", repr(env), repr(notes))


def reference(data: bytes) -> envelope.Envelope:
    return _decode_checked(data, "prodcons")


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
@example(
    b'{"v":1,"id":"a","src":"w","seq":3,"ts":1,"mode":"prodcons","attempt":1,'
    b'"payload":{"":-9223372036854775809}}'
)  # 19 digits below -2**63: orjson's float
@example(
    b'{"v":1,"id":"a","src":"w","seq":3,"ts":1,"mode":"prodcons","attempt":1,'
    b'"\x80riority":null,"payload":null}'
)  # not UTF-8 in a field msgspec skips
def test_the_hot_path_never_disagrees_with_the_reference(data: bytes) -> None:
    assert outcome(decode, data) == outcome(reference, data), data


def test_what_this_bus_writes_takes_the_hot_path_and_the_rest_does_not() -> None:
    """The hot path takes this bus's own envelopes (a handful of forms); a foreign minimal one,
    a null or a bool for a number go to the reference path, which decides them as
    documented."""
    own = [
        envelope.new({"n": 1}, src="web-1", seq=1),
        envelope.new([10**30, "x"], src="web-1", seq=7, track=True, timeout_s=2),
        envelope.new(None, src="w", seq=3, mode="pubsub", attempt=4),
        envelope.new({"priority": 2}, src="w", seq=4, priority=9),
    ]
    for env in own:
        taken = envelope._OURS.decode(env.encode())
        assert (taken.id, taken.payload, taken.attempt) == (env.id, env.payload, env.attempt)
        assert decode(env.encode()) == env
    others = [
        b'{"v":1,"id":"a","payload":1}',
        b'{"v":1,"id":"a","src":"s","seq":1,"ts":1,"mode":"prodcons","attempt":1,'
        b'"track":null,"payload":1}',
        b'{"v":1,"id":"a","src":"s","seq":true,"ts":1,"mode":"prodcons","attempt":1,"payload":1}',
    ]
    for data in others:
        try:
            envelope._OURS.decode(data)
        except envelope.msgspec.MsgspecError:
            continue
        raise AssertionError(f"the hot path took {data!r}")
    assert decode(others[0]).src == "" and decode(others[2]).seq == 0
