"""What a queue fault test pushed, and the accounting of it by message id.

"Accepted" means ``Producer.push`` returned. A push that raised (Redis down or paused) is not
counted as accepted and is pushed again after the fault under a new id; if the raised one ran
after all (a read timeout, a reply lost in a shutdown) its id may be handled too, and is
reported as ``late``, never as a phantom.

Against the handler's records (``tests.handlers_for_tests``, one line per event with the host's
monotonic clock) a test then checks one of two contracts:

* at-least-once: every accepted id handled at least once; duplicates counted and bounded by
  what was in flight at the fault; nothing handled that was never pushed;
* at-most-once: lost = accepted - handled, at most one per fault (BUS_BATCH_SIZE=1, so one
  message in hand); never a duplicate.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from loadtest.harness.server import RedisServer
from loadtest.harness.waits import wait_for
from producer import Producer, make_client
from producer.store.envelope import new as new_envelope
from tests.conftest import quick_settings

Records = list[dict[str, Any]]


class Ledger:
    """Numbered pushes: ``accepted`` (id -> payload) and ``raised`` (payloads whose push raised)."""

    def __init__(self, server: RedisServer, **settings: Any) -> None:
        self.producer = Producer(make_client(quick_settings(server.url, **settings), "producer"))
        self.accepted: dict[str, Any] = {}
        self.raised: list[Any] = []
        self.to_retry: list[Any] = []
        self.n = 0

    def payload(self, **extra: Any) -> dict[str, Any]:
        """The next numbered payload (``{"n": ...}``), not pushed."""
        p = {"n": self.n, **extra}
        self.n += 1
        return p

    def try_push(self, payload: dict[str, Any]) -> str | None:
        """One push (at the payload's ``"priority"`` and with its idempotency ``"key"``, if it
        names them); None if it raised (then it is retried by :meth:`retry_refused`)."""
        try:
            sent = self.producer.push(payload, priority=payload.get("priority"),
                                      key=payload.get("key"))  # fmt: skip
        except (redis.ConnectionError, redis.TimeoutError):
            self.raised.append(payload)
            self.to_retry.append(payload)
            return None
        self.accepted[sent.envelope.id] = payload
        return sent.envelope.id

    def push(self, timeout_s: float = 15.0, **extra: Any) -> str:
        """Push a new numbered message until it is accepted."""
        return self._push_until_accepted(self.payload(**extra), timeout_s)

    def _push_until_accepted(self, payload: dict[str, Any], timeout_s: float) -> str:
        def accepted() -> str | None:
            mid = self.try_push(payload)
            if mid is None:
                self.to_retry.remove(payload)
            return mid

        return str(wait_for(accepted, timeout_s, f"the push of {payload} to be accepted"))

    def push_many(self, count: int, **extra: Any) -> list[str]:
        """Push ``count`` new numbered messages, each until it is accepted."""
        return [self.push(**extra) for _ in range(count)]

    def retry_refused(self, timeout_s: float = 15.0) -> int:
        """Push again (new ids) every payload whose push raised; returns how many."""
        retried, self.to_retry = self.to_retry, []
        deadline = time.monotonic() + timeout_s
        for payload in retried:
            self._push_until_accepted(payload, max(0.0, deadline - time.monotonic()))
        return len(retried)

    def envelope(self, tag: str) -> tuple[bytes, dict[str, Any], str]:
        """A numbered message for another producer of the test to push: (raw, payload, id)."""
        payload = self.payload(**{tag: True})
        env = new_envelope(payload, src=f"test-{tag}", seq=1, mode="prodcons")
        return env.encode(), payload, env.id

    def adopt(self, mid: str, payload: Any) -> None:
        """A message pushed by another producer of the test and accepted."""
        self.accepted[mid] = payload


@dataclass
class Account:
    handled: Counter[str]  # id -> handled events
    lost: set[str]  # accepted, never handled
    duplicates: dict[str, int]  # id -> extra handlings
    phantoms: set[str]  # handled, never pushed at all
    late: set[str]  # handled, from a push that raised (it had run after all)

    @property
    def n_duplicates(self) -> int:
        return sum(self.duplicates.values())


def handled_ids(records: Records) -> set[str]:
    """Ids with at least one "handled" record."""
    return {r["id"] for r in records if r["event"] == "handled"}


def account(records: Records, ledger: Ledger) -> Account:
    """Every handled id set against what the ledger says was accepted or raised."""
    handled = Counter(r["id"] for r in records if r["event"] == "handled")
    payload_of = {r["id"]: r["payload"] for r in records}
    accepted = set(ledger.accepted)
    unknown = set(handled) - accepted
    late = {i for i in unknown if payload_of[i] in ledger.raised}
    return Account(
        handled=handled,
        lost=accepted - set(handled),
        duplicates={i: c - 1 for i, c in handled.items() if c > 1},
        phantoms=unknown - late,
        late=late,
    )


def resume_after(records: Records, t0: float) -> float:
    """Seconds from ``t0`` to the first handling that began after it (its "start" record, or
    its "handled" record for the instant handler)."""
    begun: dict[tuple[str, int, int], float] = {}
    for rec in records:
        if "t" in rec and rec["event"] in ("start", "handled"):
            key = (rec["id"], rec["attempt"], rec["pid"])
            begun[key] = min(begun.get(key, rec["t"]), rec["t"])
    after = [t for t in begun.values() if t > t0]
    assert after, "no message was handled after the fault"
    return min(after) - t0


def assert_at_least_once(acc: Account, dup_bound: int, why: str) -> None:
    """Nothing lost, nothing phantom, at most ``dup_bound`` duplicates (``why`` that bound)."""
    assert not acc.phantoms, f"handled ids that were never pushed: {sorted(acc.phantoms)[:5]}"
    assert not acc.lost, f"{len(acc.lost)} accepted messages never handled: {sorted(acc.lost)[:5]}"
    assert acc.n_duplicates <= dup_bound, (
        f"{acc.n_duplicates} duplicates, bound {dup_bound} ({why}): {acc.duplicates}"
    )


def assert_at_most_once(acc: Account, ledger: Ledger, expected_lost: set[str]) -> None:
    """Never a duplicate, nothing phantom, and exactly ``expected_lost`` lost (at most one)."""
    assert not acc.phantoms, f"handled ids that were never pushed: {sorted(acc.phantoms)[:5]}"
    assert acc.n_duplicates == 0, f"at-most-once handled twice: {acc.duplicates}"
    assert len(acc.lost) <= 1, f"lost {len(acc.lost)} > 1 (one fault, BUS_BATCH_SIZE=1)"
    assert len(ledger.accepted) - len(set(acc.handled) & set(ledger.accepted)) == len(acc.lost)
    assert acc.lost == expected_lost, f"lost {acc.lost}, expected exactly {expected_lost}"
