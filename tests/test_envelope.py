"""The envelope: round trip, and garbage that must raise a typed error carrying the raw bytes."""

from __future__ import annotations

import functools
import json
import logging
import shlex
import threading
import tomllib
from dataclasses import replace
from importlib import resources

import pytest
from jsonschema import Draft202012Validator

from producer import EnvelopeError, PayloadError, decode, encode
from producer.settings.checks import MAX_TIMEOUT_S
from producer.store.envelope import check_timeout, decode_noting, new, report_ignored_fields_to
from tests.procs import ROOT


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
        json.dumps({**GOOD, "track": "yes"}).encode(),
        json.dumps({**GOOD, "id": ""}).encode(),
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


# The wire format's rules, one test each (docs/wire-format.md,
# producer/store/envelope.schema.json).

MINIMAL = {"v": 1, "id": "order-42", "payload": {"order": 42}}


def raw_of(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_minimal_envelope_decodes_with_documented_defaults() -> None:
    """Only v, id and payload: no src/seq (""/0), unknown ts (0), first attempt."""
    env = decode(raw_of(MINIMAL))
    assert (env.id, env.payload, env.v) == ("order-42", {"order": 42}, 1)
    assert (env.src, env.seq, env.ts, env.attempt) == ("", 0, 0, 1)


def test_mode_defaults_to_where_the_message_was_read() -> None:
    """Without mode: the caller's default (a queue: prodcons, a channel: pubsub); with one, it."""
    assert decode(raw_of(MINIMAL)).mode == "prodcons"
    assert decode(raw_of(MINIMAL), default_mode="pubsub").mode == "pubsub"
    assert decode(raw_of({**MINIMAL, "mode": "prodcons"}), default_mode="pubsub").mode == "prodcons"


@pytest.mark.parametrize("attempt", [0, None, "absent"])
def test_attempt_zero_or_absent_means_the_first_delivery(attempt: object) -> None:
    """attempt 0, null or left out is delivery 1; a redelivery then counts 2."""
    obj = {k: v for k, v in GOOD.items() if k != "attempt"}
    if attempt != "absent":
        obj["attempt"] = attempt
    env = decode(raw_of(obj))
    assert env.attempt == 1
    assert decode(env.next_attempt().encode()).attempt == 2


def test_null_optional_fields_mean_absent() -> None:
    """A producer whose JSON library writes unset fields as null gets the defaults."""
    nulls = {"src": None, "seq": None, "ts": None, "mode": None, "attempt": None}
    env = decode(raw_of({**MINIMAL, **nulls}), default_mode="pubsub")
    assert (env.src, env.seq, env.ts, env.mode, env.attempt) == ("", 0, 0, "pubsub", 1)


def test_unknown_fields_are_ignored_and_not_kept_on_reencoding() -> None:
    """Extra fields do not make garbage; re-encoding (a retry, a requeue) drops them."""
    env = decode(raw_of({**GOOD, "trace": {"id": "abc"}, "weight": 9}))
    assert env == decode(raw_of(GOOD))
    assert set(json.loads(env.next_attempt().encode())) == set(GOOD)


def test_version_is_checked_first_and_named() -> None:
    """v 2 is refused by its version even when nothing else would pass as version 1."""
    for obj in ({**GOOD, "v": 2}, {"v": 2, "id": 7, "body": "new layout"}):
        with pytest.raises(EnvelopeError) as info:
            decode(raw_of(obj))
        assert info.value.reason == "unsupported envelope version 2; this consumer reads version 1"


# (document, a fragment of the decoder's reason): what cannot be handled. Every one is also
# invalid under the schema.
INVALID: list[tuple[object, str]] = [
    ([1, 2], "not a JSON object"),
    ("a string", "not a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "v"}, "'v'"),
    ({**GOOD, "v": None}, "'v'"),
    ({**GOOD, "v": "1"}, "'v'"),
    ({**GOOD, "v": True}, "'v'"),
    ({**GOOD, "v": 2}, "unsupported envelope version 2"),
    ({**GOOD, "v": 0}, "unsupported envelope version 0"),
    ({k: v for k, v in GOOD.items() if k != "id"}, "'id'"),
    ({**GOOD, "id": ""}, "'id'"),
    ({**GOOD, "id": 42}, "'id'"),
    ({k: v for k, v in GOOD.items() if k != "payload"}, "'payload'"),
    ({**GOOD, "mode": "carrier-pigeon"}, "mode"),
    ({**GOOD, "mode": 1}, "mode"),
    ({**GOOD, "track": "yes"}, "'track'"),
    ({**GOOD, "track": 1}, "'track'"),
]


@pytest.mark.parametrize(("obj", "reason"), INVALID)
def test_invalid_envelopes_are_refused_with_a_reason(obj: object, reason: str) -> None:
    """What a consumer cannot handle as meant is refused; the reason says which field."""
    with pytest.raises(EnvelopeError) as info:
        decode(raw_of(obj))
    assert reason in info.value.reason


def without(*names: str) -> dict[str, object]:
    return {k: v for k, v in GOOD.items() if k not in names}


# (document, the fields the decoder ignores, in its notes' order): the optional accounting
# fields out of range or of the wrong type. Valid work all the same: decoded, with the ignored
# fields as if absent (src "" and seq 0, ts 0, attempt 1). Every one is invalid under the
# schema, which says what a producer should send.
IGNORED: list[tuple[dict[str, object], tuple[str, ...]]] = [
    ({**GOOD, "seq": 0}, ("seq",)),
    ({**GOOD, "seq": -5}, ("seq",)),
    ({**GOOD, "seq": "1"}, ("seq",)),
    ({**GOOD, "seq": True}, ("seq",)),
    ({**GOOD, "seq": 1.5}, ("seq",)),
    ({**GOOD, "src": ""}, ("src",)),
    ({**GOOD, "src": 7}, ("src",)),
    ({**GOOD, "src": 7, "seq": 0}, ("src", "seq")),
    (without("seq"), ("src",)),
    ({**GOOD, "seq": None}, ("src",)),
    (without("src"), ("seq",)),
    ({**GOOD, "ts": -1}, ("ts",)),
    ({**GOOD, "ts": "abc"}, ("ts",)),
    ({**GOOD, "ts": "2026-01-01T00:00:00Z"}, ("ts",)),
    ({**GOOD, "ts": False}, ("ts",)),
    ({**GOOD, "attempt": -1}, ("attempt",)),
    ({**GOOD, "attempt": True}, ("attempt",)),
    ({**GOOD, "attempt": 2.5}, ("attempt",)),
    ({**GOOD, "seq": 0, "ts": -1, "attempt": -1}, ("seq", "ts", "attempt")),
    ({**GOOD, "timeout_s": 0}, ("timeout_s",)),
    ({**GOOD, "timeout_s": -30}, ("timeout_s",)),
    ({**GOOD, "timeout_s": 604800.5}, ("timeout_s",)),
    ({**GOOD, "timeout_s": 10**400}, ("timeout_s",)),
    ({**GOOD, "timeout_s": "30"}, ("timeout_s",)),
    ({**GOOD, "timeout_s": True}, ("timeout_s",)),
    ({**GOOD, "timeout_s": [30]}, ("timeout_s",)),
    ({**GOOD, "seq": 0, "timeout_s": 0}, ("seq", "timeout_s")),
]


@pytest.mark.parametrize(("obj", "fields"), IGNORED)
def test_out_of_range_accounting_fields_are_ignored_not_refused(
    obj: dict[str, object], fields: tuple[str, ...]
) -> None:
    """A foreign producer's seq 0 (or -5, or "abc" for a ts...) does not make its work
    garbage: the envelope decodes with the field as if absent, and the notes say which."""
    env, notes = decode_noting(raw_of(obj))
    assert [n.split()[0] for n in notes] == list(fields), notes
    assert (env.id, env.payload, env.mode) == (GOOD["id"], GOOD["payload"], GOOD["mode"])
    pair_ignored = {"src", "seq"} & set(fields)
    assert (env.src, env.seq) == (("", 0) if pair_ignored else (GOOD["src"], GOOD["seq"]))
    assert env.ts == (0 if "ts" in fields else GOOD["ts"])
    assert env.attempt == 1
    assert env.timeout_s == (None if "timeout_s" in fields else obj.get("timeout_s"))
    assert decode(raw_of(obj)) == env
    again, again_notes = decode_noting(env.next_attempt().encode())  # a retry writes it clean
    assert again_notes == () and again.attempt == 2


def test_ignored_fields_are_reported_to_the_sink_of_the_decoding_thread() -> None:
    """decode() tells the sink its thread installed (a daemon counts and logs there); another
    thread's decodes, and clean envelopes, are not reported to it."""
    seen: list[tuple[str, tuple[str, ...]]] = []
    odd = raw_of({**GOOD, "seq": 0})
    previous = report_ignored_fields_to(lambda env, notes: seen.append((env.id, notes)))
    try:
        decode(raw_of(GOOD))
        decode(odd)
        other = threading.Thread(target=decode, args=(odd,))
        other.start()
        other.join()
    finally:
        report_ignored_fields_to(previous)
    assert seen == [(GOOD["id"], ("seq 0 (not an integer >= 1)",))]
    decode(odd)  # no sink any more: logged at DEBUG only
    assert len(seen) == 1


@pytest.mark.parametrize("timeout_s", [0.001, 2.5, 30, 604800])
def test_a_time_limit_travels_with_the_message(timeout_s: float) -> None:
    """timeout_s, a number > 0 and <= 7 days, is kept as a float through a round trip, a retry
    and a dead-letter requeue's rewrite; a foreign producer's integer reads as the same limit."""
    env = new({"n": 1}, src="p", seq=1, timeout_s=timeout_s)
    assert env.timeout_s == float(timeout_s) and type(env.timeout_s) is float
    assert json.loads(env.encode())["timeout_s"] == timeout_s
    assert decode(env.encode()) == env
    again = decode(env.next_attempt().encode())
    assert (again.attempt, again.timeout_s) == (2, float(timeout_s))
    assert decode(replace(again, attempt=1).encode()).timeout_s == float(timeout_s)
    foreign, notes = decode_noting(raw_of({**MINIMAL, "timeout_s": timeout_s}))
    assert (foreign.timeout_s, notes) == (float(timeout_s), ())
    assert decode(raw_of({**GOOD, "timeout_s": timeout_s})).timeout_s == float(timeout_s)


def test_without_a_time_limit_the_encoding_is_unchanged() -> None:
    """timeout_s None (absent or null) is not written: such envelopes stay as they were."""
    env = new(1, src="p", seq=1)
    assert env.timeout_s is None and b"timeout_s" not in env.encode()
    assert decode(raw_of({**GOOD, "timeout_s": None})).timeout_s is None
    assert encode(decode(raw_of(GOOD))) == encode(decode(raw_of({**GOOD, "timeout_s": None})))


@pytest.mark.parametrize(
    "bad", [0, -1, 0.0, 604800.001, 10**400, float("nan"), float("inf"), True, "30", None]
)
def test_check_timeout_refuses_what_the_envelope_cannot_carry(bad: object) -> None:
    """check_timeout: None passes as None, anything but a number in (0, 7 days] is refused."""
    if bad is None:
        assert check_timeout(bad) is None
        return
    with pytest.raises(ValueError, match="timeout_s"):
        check_timeout(bad)


def test_the_schema_bounds_timeout_s_as_the_decoder_does() -> None:
    """The schema's maximum is MAX_TIMEOUT_S, the settings' bound (7 days)."""
    prop = load_schema()["properties"]["timeout_s"]  # type: ignore[index]
    assert (prop["exclusiveMinimum"], prop["maximum"]) == (0, MAX_TIMEOUT_S) == (0, 604800)


def test_encode_leaves_out_what_is_not_set() -> None:
    """An envelope without src/seq or ts (one a foreign producer sent, requeued) is written
    without them, so it stays valid under the schema, and decodes to the same envelope."""
    env = decode(raw_of(MINIMAL)).next_attempt()
    obj = json.loads(env.encode())
    assert set(obj) == {"v", "id", "mode", "attempt", "payload"}
    assert decode(env.encode()) == env


# The schema shipped in the package says the same as the decoder.


@functools.cache
def load_schema() -> dict[str, object]:
    schema = json.loads((resources.files("producer.store") / "envelope.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return schema


def schema_errors(obj: object) -> list[str]:
    return [e.message for e in Draft202012Validator(load_schema()).iter_errors(obj)]


def test_schema_is_valid_and_shipped_in_the_package() -> None:
    """A valid draft 2020-12 schema, listed in the package data so a wheel carries it."""
    load_schema()
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert "store/envelope.schema.json" in package_data["producer"]


def test_schema_accepts_what_the_project_encodes() -> None:
    """Every envelope the project writes validates: fresh, redelivered, re-encoded foreign."""
    envs = [
        new({"k": [1, 2.5, None, "é"]}, src="p1", seq=7, mode="pubsub"),
        new(None, src="4242-9f3a0c1b2d", seq=1, mode="prodcons").next_attempt(),
        decode(raw_of(MINIMAL), default_mode="pubsub").next_attempt(),
        decode(raw_of({**MINIMAL, "attempt": 0, "extra": 1})),
        decode(raw_of({**GOOD, "seq": 0, "ts": -5, "attempt": -1})).next_attempt(),
    ]
    for env in envs:
        assert schema_errors(json.loads(env.encode())) == [], env


def wire_format_page() -> str:
    """The docs' Wire format page (docs/wire-format.md)."""
    return (ROOT / "docs" / "wire-format.md").read_text(encoding="utf-8")


def documented_examples() -> list[object]:
    """The JSON example and the envelopes of the redis-cli lines of the Wire format page."""
    section = wire_format_page()
    examples: list[object] = [
        json.loads(block.split("```", 1)[0]) for block in section.split("```json\n")[1:]
    ]
    for line in section.splitlines():
        if line.startswith("redis-cli "):
            examples.append(json.loads(shlex.split(line)[-1]))
    return examples


def test_documented_examples_are_valid_for_both() -> None:
    """The documented examples (a complete envelope, the redis-cli lines) pass both checks."""
    examples = documented_examples()
    assert len(examples) == 3
    for obj in examples:
        assert schema_errors(obj) == [], obj
        decode(raw_of(obj))


@pytest.mark.parametrize(("obj", "reason"), INVALID)
def test_schema_refuses_what_the_decoder_refuses(obj: object, reason: str) -> None:
    """Each invalid document is refused by the schema too."""
    assert schema_errors(obj), f"the schema accepts what the decoder refuses ({reason})"


@pytest.mark.parametrize(("obj", "fields"), IGNORED)
def test_schema_refuses_what_the_decoder_ignores(
    obj: dict[str, object], fields: tuple[str, ...]
) -> None:
    """The schema says what to send: a field the decoder would ignore is invalid there."""
    assert schema_errors(obj), f"the schema accepts what the decoder ignores ({fields})"


POOL: list[object] = ["absent", None, 0, 1, 2, -1, True, 1.5, "", "x", "pubsub", [], {}]


@pytest.mark.parametrize("base", [GOOD, MINIMAL], ids=["full", "minimal"])
def test_schema_and_decoder_agree_field_by_field(base: dict[str, object]) -> None:
    """Each field set to each of a pool of values (or left out): the schema accepts exactly
    what the decoder takes as it is (nothing refused, nothing ignored); what the decoder only
    ignores is an accounting field or timeout_s."""
    disagree = []
    for name in ("v", "id", "payload", "src", "seq", "ts", "mode", "attempt", "track",
                 "timeout_s"):  # fmt: skip
        for value in POOL:
            obj = {k: v for k, v in base.items() if k != name}
            if value != "absent":
                obj[name] = value
            try:
                notes = decode_noting(raw_of(obj))[1]
                clean = not notes
                assert {n.split()[0] for n in notes} <= {"src", "seq", "ts", "attempt",
                                                         "timeout_s"}  # fmt: skip
            except EnvelopeError:
                clean = False
            if clean != (not schema_errors(obj)):
                disagree.append((name, value, clean))
    assert disagree == []


def test_the_one_known_disagreement_integral_floats() -> None:
    """JSON Schema counts 1.0 as an integer; the decoder does not, and ignores it as any
    accounting field of the wrong type (documented in both)."""
    obj = {**GOOD, "seq": 1.0}
    assert schema_errors(obj) == []
    assert decode_noting(raw_of(obj))[1] == ("seq 1.0 (not an integer >= 1)",)


def test_the_default_handler_logs_no_age_for_an_envelope_without_ts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A foreign envelope without ``ts`` or ``src``/``seq``: the demo handler says so rather than
    logging an age of 55 years and a sequence number 0."""
    from consumers.handlers import log_message

    with caplog.at_level(logging.INFO, logger="consumers.handler"):
        log_message(decode(b'{"v":1,"id":"x","payload":1}'))
    assert "age_ms=- " in caplog.text and "src=- seq=-" in caplog.text


# --- The fast JSON (orjson) writes and reads exactly what the standard library would ---------

ORDINARY_PAYLOADS = [0, -1, 2**63 - 1, -(2**63), 1.5, 1e16, -0.0, "", "é ☃ 😀", None, True,
                     [1, [2, [3]]], {"a": None, "b": [{"c": "d"}]}, 'a"b\\c\n\x00']  # fmt: skip


@pytest.mark.parametrize("payload", ORDINARY_PAYLOADS)
def test_encoding_matches_the_standard_library(payload: object) -> None:
    env = new(payload, src="p", seq=1, mode="prodcons")
    expected = json.dumps(
        {"v": 1, "id": env.id, "src": "p", "seq": 1, "ts": env.ts, "mode": "prodcons",
         "attempt": 1, "payload": payload},
        separators=(",", ":"), ensure_ascii=False, allow_nan=False,
    ).encode()  # fmt: skip
    assert json.loads(encode(env)) == json.loads(expected)
    assert decode(encode(env)).payload == payload


@pytest.mark.parametrize("payload", [2**64, -(2**70), {"n": 123456789012345678901234567890}])
def test_integers_past_64_bits_stay_exact(payload: object) -> None:
    """orjson reads such an integer as a float; the bus must hand the handler the same number."""
    raw = encode(new(payload, src="p", seq=1, mode="prodcons"))
    assert decode(raw).payload == payload
    assert decode(raw).encode() == raw


@pytest.mark.parametrize("payload", [float("inf"), [1, float("-inf")], {"x": float("nan")}])
def test_nan_and_infinity_are_refused_not_written_as_null(payload: object) -> None:
    with pytest.raises(PayloadError):
        encode(new(payload, src="p", seq=1, mode="prodcons"))


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json_when_read(literal: bytes) -> None:
    raw = b'{"v":1,"id":"x","payload":' + literal + b"}"
    with pytest.raises(EnvelopeError, match="not JSON"):
        decode(raw)
    with pytest.raises(EnvelopeError, match="not JSON"):  # also beside a long number
        decode(b'{"v":1,"id":"x","n":123456789012345678901,"payload":' + literal + b"}")


def test_non_string_keys_are_converted_as_the_standard_library_does() -> None:
    env = new({1: "a", None: "b"}, src="p", seq=1, mode="prodcons")
    assert decode(encode(env)).payload == {"1": "a", "null": "b"}


def test_a_decoded_envelope_is_frozen_and_equal_to_a_built_one() -> None:
    env = new("k", src="p", seq=3, mode="pubsub")
    back = decode(encode(env))
    assert back == env and hash(back) == hash(env)
    with pytest.raises(AttributeError):
        back.attempt = 5  # type: ignore[misc]
