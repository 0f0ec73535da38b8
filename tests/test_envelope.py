"""The envelope: round trip, and garbage that must raise a typed error carrying the raw bytes."""

from __future__ import annotations

import json

import pytest

from producer import EnvelopeError, PayloadError, decode, encode
from producer.envelope import new


def test_round_trip_keeps_every_field() -> None:
    """encode then decode gives the same envelope, in compact JSON with the documented fields."""
    env = new({"k": [1, 2.5, None, "é"]}, src="p1", seq=7, mode="pubsub")
    raw = encode(env)
    assert decode(raw) == env
    obj = json.loads(raw)
    assert set(obj) == {"v", "id", "src", "seq", "ts", "mode", "attempt", "payload"}
    assert obj["v"] == 1 and obj["attempt"] == 1 and len(obj["id"]) == 32
    assert b" " not in raw.replace("é".encode(), b"")  # compact separators


def test_next_attempt_counts_up() -> None:
    """A redelivered envelope keeps its id and counts one more attempt."""
    env = new(1, src="p", seq=1, mode="prodcons")
    again = decode(env.next_attempt().encode())
    assert (again.id, again.attempt) == (env.id, 2)


def test_payload_that_is_not_json_is_refused() -> None:
    """Only JSON payloads: no pickle, no NaN, no arbitrary objects."""
    with pytest.raises(PayloadError):
        encode(new(object(), src="p", seq=1, mode="prodcons"))
    with pytest.raises(PayloadError):
        encode(new(float("nan"), src="p", seq=1, mode="prodcons"))


GOOD = {"v": 1, "id": "a" * 32, "src": "p", "seq": 1, "ts": 1, "mode": "prodcons",
        "attempt": 1, "payload": None}  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        json.dumps({**GOOD, "v": 2}).encode(),
        json.dumps({**GOOD, "mode": "carrier-pigeon"}).encode(),
        json.dumps({**GOOD, "seq": "1"}).encode(),
        json.dumps({**GOOD, "attempt": True}).encode(),
        json.dumps({**GOOD, "attempt": 0}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "payload"}).encode(),
        json.dumps({k: v for k, v in GOOD.items() if k != "id"}).encode(),
        b"[" * 100_000,
        b"x" * (1 << 20),
    ],
)
def test_garbage_raises_typed_error_with_raw_bytes(raw: bytes) -> None:
    """Anything that is not an envelope raises EnvelopeError, which keeps the exact bytes."""
    with pytest.raises(EnvelopeError) as info:
        decode(raw)
    assert info.value.raw == raw
    assert info.value.reason


def test_good_dict_decodes() -> None:
    """The minimal valid envelope decodes (the garbage cases differ from it by one field)."""
    assert decode(json.dumps(GOOD).encode()).payload is None
