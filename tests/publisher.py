"""What a pub/sub fault test published, attempt by attempt, and a subscriber's record checked
against it.

One Producer (one ``src``, consecutive ``seq``) publishes ``{"n": i, ...}``, on demand or from
a thread at a steady rate. A publish that raised a plain ConnectionError or TimeoutError never
ran (its sequence number stays free and is reused), as the producer promises. One that raised
``Unconfirmed`` was sent and its reply lost: an unknown outcome, its number consumed.

For each subscriber process, :func:`account` checks against this independent record: ``lost``
(its final stats, written on exit) == published after its first received message (the baseline)
- received; ``received`` == the number of records; no duplicates. :func:`receives_after` checks
that it receives again after the fault: every message published after its first post-fault
message reached it, and it received the last one (so no loss hides in the tail).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from producer import Producer, Settings, Unconfirmed, make_client

RATE_S = 0.005  # one message every 5 ms


@dataclass
class Attempt:
    n: int
    t0: float  # wall clock before the PUBLISH
    t1: float  # wall clock after it returned or raised
    outcome: str  # "ok" (accepted), "failed" (did not run), "unknown" (Unconfirmed: reply lost)
    seq: int | None = None  # the sequence number it used (ok or unknown), None if failed
    id: str | None = None  # envelope id (ok only)
    receivers: int | None = None  # PUBLISH's answer (ok only)
    error: str = ""


class Publisher:
    """Publishes ``{"n": i, ...}`` with one Producer, on demand or from a thread at a steady
    rate, and remembers every attempt in order."""

    def __init__(self, url: str, pad: int = 0) -> None:
        settings = Settings(redis_url=url, connect_timeout_s=1.0)
        self.producer = Producer(make_client(settings, "producer"))
        self.pad = "x" * pad
        self.attempts: list[Attempt] = []
        self.next_seq = 1  # what the producer must use next (its numbering contract)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish_one(self, pad: str | None = None) -> Attempt:
        """One PUBLISH, recorded with its outcome."""
        with self._lock:
            n = len(self.attempts)
            payload: dict[str, Any] = {"n": n}
            pad = self.pad if pad is None else pad
            if pad:
                payload["pad"] = pad
            t0 = time.time()
            try:
                sent = self.producer.publish(payload)
            except Unconfirmed as exc:  # sent, reply lost: may have run, its number is used
                a = Attempt(n, t0, time.time(), "unknown", seq=self.next_seq,
                            error=f"{type(exc).__name__}: {exc}")  # fmt: skip
                self.next_seq += 1
            except redis.ConnectionError as exc:  # refused or closed: not published
                a = Attempt(n, t0, time.time(), "failed", error=f"{type(exc).__name__}: {exc}")
            else:
                env = sent.envelope
                assert env.seq == self.next_seq, "the producer skipped or reused a number"
                a = Attempt(n, t0, time.time(), "ok", env.seq, env.id, sent.result)
                self.next_seq += 1
            self.attempts.append(a)
            return a

    def start(self, rate_s: float = RATE_S) -> Publisher:
        """Publish from a thread, one message every ``rate_s``, until :meth:`stop`."""
        assert self._thread is None
        self._stop.clear()

        def run() -> None:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.publish_one()
                next_at = max(next_at + rate_s, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))

        self._thread = threading.Thread(target=run, name="test-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread; when this returns no PUBLISH is in flight."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            assert not self._thread.is_alive()
            self._thread = None

    def accepted(self) -> list[Attempt]:
        """Attempts Redis accepted."""
        return [a for a in self.attempts if a.outcome == "ok"]

    def numbered(self) -> list[Attempt]:
        """Attempts that used a sequence number (accepted or unknown outcome)."""
        return [a for a in self.attempts if a.outcome in ("ok", "unknown")]

    def count(self, outcome: str) -> int:
        """How many attempts had ``outcome``."""
        return sum(1 for a in self.attempts if a.outcome == outcome)

    def last_ok(self) -> Attempt:
        """The last accepted attempt."""
        return self.accepted()[-1]


@dataclass
class Accounting:
    baseline_n: int  # attempt number of the first message received
    published: int  # numbered attempts from the baseline on (accepted + unknown outcome)
    unknown: int  # of which TimeoutError (unknown outcome)
    received: int
    lost: int  # published - received


def account(pub: Publisher, records: list[dict[str, Any]], stats: dict[str, str]) -> Accounting:
    """Assert the subscriber's counters against what was published, exactly; return the numbers.

    ``records`` are the records of one subscriber process (one GapCounter)."""
    assert records, "the subscriber received nothing"
    numbered = pub.numbered()
    by_seq = {a.seq: a for a in numbered}
    ids = [x["id"] for x in records]
    assert len(set(ids)) == len(ids), "a message was handled twice"
    accepted_ids = {a.id for a in pub.accepted()}
    for x in records:
        a = by_seq.get(x["seq"])
        assert a is not None, f"received seq {x['seq']}, which no publish used"
        # an accepted message must be the very envelope; an unknown-outcome one was published
        assert a.outcome == "unknown" or x["id"] == a.id, f"seq {x['seq']}: another envelope"
        assert a.outcome == "unknown" or x["id"] in accepted_ids
    seqs = [x["seq"] for x in records]
    assert seqs == sorted(seqs), "pub/sub from one producer must arrive in order"
    first_seq = seqs[0]
    # Loss after the last received message is invisible to any subscriber: the tests make sure
    # the last publish was received.
    assert seqs[-1] == numbered[-1].seq, "the last published message was not received"
    span = [a for a in numbered if a.seq >= first_seq]
    acc = Accounting(
        baseline_n=by_seq[first_seq].n,
        published=len(span),
        unknown=sum(1 for a in span if a.outcome == "unknown"),
        received=len(records),
        lost=len(span) - len(records),
    )
    assert int(stats["received"]) == len(records)
    assert int(stats["handled"]) == len(records)
    assert int(stats["duplicates"]) == 0
    assert int(stats["out_of_order"]) == 0
    assert int(stats["lost"]) == acc.published - acc.received, (acc, stats)
    return acc


def receives_after(
    pub: Publisher, records: list[dict[str, Any]], after_t: float, at_least: int = 20
) -> dict[str, Any]:
    """Assert the subscriber receives again after the fault: from its first message received
    after ``after_t`` (handler time) on, it received every accepted message. Returns that first
    post-fault record."""
    post = [x for x in records if x["wall"] > after_t]
    assert post, "nothing received after the fault"
    got = {x["id"] for x in records}
    later = [a for a in pub.accepted() if a.seq is not None and a.seq >= post[0]["seq"]]
    missing = [a.n for a in later if a.id not in got]
    assert not missing, f"lost after recovery: {missing[:20]}"
    assert len(later) >= at_least, "too few messages after recovery to show it receives again"
    return post[0]
