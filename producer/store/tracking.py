"""Tracked messages: a status record per message, kept by the scripts that move it.

A message is tracked when its envelope says ``"track": true`` (``Producer.push(track=True)``,
``POST /prodcons`` with ``"track": true``, or a queue named in ``BUS_TRACK_QUEUES``). Its record,
the hash ``bus:{q}:msg:<id>``, lives in the queue's hash slot and expires ``BUS_RESULT_TTL_S``
after its last change. It goes through these states:

``scheduled``  pushed with a delay, waiting in ``bus:{q}:delayed`` (``due_ms``)
``pending``    waiting in ``bus:{q}:pending`` (also: given back unhandled by a stopping worker)
``in-flight``  claimed by ``worker``, delivery ``attempt``, since ``in_flight_ms``; ``progress``
``retrying``   its ``attempt`` failed (``error``) or its worker died (reaped): it waits to be
               delivered again (after a backoff: ``due_ms``)
``handled``    acked; ``result`` is the handler's JSON return value (``result_error`` says why
               a result was not stored)
``dead``       dead-lettered (``reason``); requeued from the dead letters, it is ``pending``
               again, attempt 1 (``requeued_ms``)
``waiting``    pushed with ``after``: it waits aside until every message it names is handled
               (``after``, ``waiting_for``: how many are left; see
               :mod:`producer.store.after`), then it is ``pending``
``cancelled``  cancelled (:func:`cancel`) while it waited (``cancelled_from``: scheduled,
               pending, retrying or waiting; the script that next meets the message drops it), or
               while its handler ran (``cancel_ms``, then ``cancelled`` with the ``reason``
               when the attempt ended other than handled: it is not retried)

Every state change is written by the very script that makes it: the push, the mover, the claim,
the settle (ack, retry, dead letter, give back), the reaper and the dead letters' requeue. So a
record never says ``handled`` for a message that was not acked, and a redelivery always shows.
Two exceptions, written by the worker itself: the ``in-flight`` of a message it took with a
blocking pop (the queue was empty), just before the handler runs, and with ``--delivery
at-most-once`` (no script claims or acks there) its ``in-flight`` and ``handled``.

``bus:{q}:tracking`` gates it all: it exists while any record of the queue may exist (every
record write extends it), and holds the records' TTL in ms. A queue without it costs the
scripts one GET per call and nothing per message. Producers in other languages track a message
by setting ``"track": true`` in the envelope and ``SET bus:{q}:tracking <ttl_ms> PX <ttl_ms>``
before pushing; the first script that moves it then writes its record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from producer.store import keys, scripts

STATES = ("waiting", "scheduled", "pending", "in-flight", "retrying", "handled", "dead",
          "cancelled")  # fmt: skip
FINAL = ("handled", "dead", "cancelled")
INTS = (
    "attempt",
    "due_ms",
    "created_ms",
    "updated_ms",
    "progress_ms",
    "requeued_ms",
    "cancel_ms",
    "waiting_for",
)
OUTCOMES = {
    "cancelled": "it waited (scheduled, pending, retrying, or waiting for others): it will "
    "not be delivered",
    "signalled": "it is in a handler's hands: Context.cancelled is true now, and its attempt "
    "is not retried",
    "finished": "it was handled, dead-lettered or cancelled already: nothing was done",
}


@dataclass(frozen=True)
class Cancellation:
    """What :func:`cancel` did: ``outcome`` (a key of :data:`OUTCOMES`), the message's
    ``queue`` and its ``state`` before."""

    queue: str
    outcome: str
    state: str

    @property
    def meaning(self) -> str:
        return OUTCOMES[self.outcome]

    def answer(self, msg_id: str) -> dict[str, str]:
        """What an API or a tool says of it (JSON)."""
        return {"id": msg_id, "queue": self.queue, "outcome": self.outcome, "state": self.state,
                "meaning": self.meaning}  # fmt: skip


STAMPS = {state: state.replace("-", "_") + "_ms" for state in STATES}
MAX_ID_CHARS = 256


def check_id(msg_id: str) -> str | None:
    """Why ``msg_id`` cannot name a record (None: it can)."""
    if not msg_id or len(msg_id) > MAX_ID_CHARS:
        return f"a message id has 1 to {MAX_ID_CHARS} characters"
    if any(ord(c) < 32 for c in msg_id):
        return "a message id has no control characters"
    return None


def read_record(client: redis.Redis, queue: str, msg_id: str) -> dict[str, Any] | None:
    """The record of ``msg_id`` on ``queue``, parsed (see :func:`parse`); None if there is none
    (never tracked, unknown, or expired)."""
    return find_record(client, (queue,), msg_id)


def cancel(client: redis.Redis, queues: Iterable[str], msg_id: str) -> Cancellation | None:
    """Cancel tracked message ``msg_id`` on the first of ``queues`` that has a record of it (one
    script there, lua/cancel.lua); None when none has. Cancelling again is harmless: it says
    ``finished`` (or ``signalled`` while the handler still runs)."""
    from producer.store import after  # after imports this module

    for queue in queues:
        cancel_keys = (keys.tracking(queue), keys.record(queue, msg_id), keys.waiting(queue),
                       keys.wait(queue, msg_id), keys.pending(queue))  # fmt: skip
        outcome, before, told = (_text(x) for x in scripts.CANCEL(client, cancel_keys, (msg_id,)))
        if outcome != "unknown":
            if int(told):  # what waited for it ends too, at once
                after.drain(client, queue)
            return Cancellation(queue, outcome, before)
    return None


def find_record(client: redis.Redis, queues: Iterable[str], msg_id: str) -> dict[str, Any] | None:
    """The record of ``msg_id`` on the first of ``queues`` that has one (one round trip)."""
    queues = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.hgetall(keys.record(queue, msg_id))
        pipe.pttl(keys.record(queue, msg_id))
    replies = pipe.execute()
    for i in range(len(queues)):
        fields, ttl_ms = replies[2 * i], replies[2 * i + 1]
        if fields:
            return parse(fields, int(ttl_ms))
    return None


def results_before(client: redis.Redis, queue: str, msg_id: str) -> list[Any]:
    """The results of the messages that message ``msg_id`` of ``queue`` waited for (its
    record's ``after``, :mod:`producer.store.after`), in that order: each handler's JSON value
    (None when it returned nothing). [] for a message pushed without ``after``. LookupError
    when one has no record or is not handled."""
    shown = client.hget(keys.record(queue, msg_id), "after")
    needs = [(p["queue"], p["id"]) for p in json.loads(shown)] if shown else []
    out: list[Any] = []
    for start in range(0, len(needs), 1000):
        pipe = client.pipeline(transaction=False)
        for q, i in needs[start : start + 1000]:
            pipe.hmget(keys.record(q, i), "state", "result")
        for (q, i), (state, result) in zip(needs[start : start + 1000], pipe.execute(),
                                           strict=True):  # fmt: skip
            if state is None or _text(state) != "handled":
                said = f"is {_text(state)}" if state is not None else "has no record"
                raise LookupError(f"{i} on {q} {said}, not handled: it has no result")
            out.append(json.loads(result) if result else None)
    return out


def parse(fields: dict[Any, Any], ttl_ms: int = -1) -> dict[str, Any]:
    """A record's hash as JSON-ready values: integers for counts and times (ms since the epoch,
    Redis's clock), ``progress`` a float, ``result`` the handler's JSON value, and
    ``expires_in_ms`` (the record's TTL left)."""
    out: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        key = _text(raw_key)
        value = _text(raw_value)
        if key in INTS or key in STAMPS.values():
            out[key] = _int(value)
        elif key == "progress":
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = None
        elif key == "result" or key == "after":
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    out["final"] = out.get("state") in FINAL
    out["expires_in_ms"] = ttl_ms if ttl_ms >= 0 else None
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: str) -> int | None:
    try:
        return int(float(value))
    except ValueError:
        return None
