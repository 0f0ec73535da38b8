"""The worker's list scripts, against what the one-by-one commands they replace would do.

A claim moves a batch in three commands (LRANGE, LTRIM, LPUSH) where LMOVE RIGHT LEFT one by one
did the same; a settle of a batch all acked is one LTRIM when the acked values are the list's
tail in claim order, and one LREM each otherwise; settle-and-claim does both in one script.
"""

from __future__ import annotations

import redis

from consumers.lists import QueueOps
from consumers.moves import ACK, RELEASE, RETRY
from producer import keys

Q = "default"
PENDING, PROC = keys.pending(Q), keys.processing(Q, "w")


def fill(r: redis.Redis, n: int, key: str = PENDING) -> list[bytes]:
    values = [f"m{i}".encode() for i in range(n)]
    if values:
        r.lpush(key, *values)  # m0 is the oldest, at the consuming (right) end
    return values


def test_a_claim_leaves_both_lists_as_lmove_one_by_one_would(r: redis.Redis) -> None:
    ref_pending, ref_proc = keys.pending("ref"), keys.processing("ref", "w")
    for pending, proc in ((PENDING, PROC), (ref_pending, ref_proc)):
        fill(r, 10, pending)
        r.lpush(proc, b"older")
    by_one = [r.lmove(ref_pending, ref_proc, "RIGHT", "LEFT") for _ in range(4)]

    got = QueueOps(r, Q).claim("w", 4)
    assert got == by_one == [b"m0", b"m1", b"m2", b"m3"]  # oldest first
    assert r.lrange(PROC, 0, -1) == r.lrange(ref_proc, 0, -1)
    assert r.lrange(PENDING, 0, -1) == r.lrange(ref_pending, 0, -1)
    assert r.lrange(PROC, 0, -1) == [b"m3", b"m2", b"m1", b"m0", b"older"]


def test_a_claim_takes_what_there_is_and_empties_the_queue(r: redis.Redis) -> None:
    fill(r, 3)
    assert QueueOps(r, Q).claim("w", 100) == [b"m0", b"m1", b"m2"]
    assert not r.exists(PENDING)
    assert QueueOps(r, Q).claim("w", 100) == []


def test_a_claim_past_luas_stack_limit(r: redis.Redis) -> None:
    values = fill(r, 2500)
    assert QueueOps(r, Q).claim("w", 2500) == values
    assert r.lrange(PROC, 0, -1) == list(reversed(values))


def test_a_batch_all_acked_leaves_the_rest_of_the_list(r: redis.Redis) -> None:
    ops = QueueOps(r, Q)
    r.lpush(PROC, b"ghost")  # a newer value (a pop that landed late) stays
    fill(r, 5)
    batch = ops.claim("w", 5)
    assert ops.settle("w", [(raw, b"", ACK) for raw in batch]) == (5, 0)
    assert r.lrange(PROC, 0, -1) == [b"ghost"]
    assert ops.settle("w", [(raw, b"", ACK) for raw in batch]) == (0, 0)  # settled twice: no-op
    assert r.lrange(PROC, 0, -1) == [b"ghost"]


def test_acks_out_of_claim_order_or_mixed_take_the_slow_path_to_the_same_end(
    r: redis.Redis,
) -> None:
    ops = QueueOps(r, Q)
    fill(r, 6)
    batch = ops.claim("w", 6)
    moves = [(batch[1], b"", ACK), (batch[0], b"", ACK), (batch[2], b"retry-2", RETRY),
             (batch[3], b"", ACK), (batch[5], batch[5], RELEASE)]  # fmt: skip
    assert ops.settle("w", moves) == (5, 0)
    assert r.lrange(PROC, 0, -1) == [batch[4]]  # not settled: still in flight
    assert r.lrange(PENDING, 0, -1) == [b"retry-2", batch[5]]  # back of the line; next


def test_a_value_twice_in_the_list_is_acked_once(r: redis.Redis) -> None:
    ops = QueueOps(r, Q)
    r.lpush(PENDING, b"same", b"same", b"other")
    batch = ops.claim("w", 3)
    assert batch == [b"same", b"same", b"other"]
    assert ops.settle("w", [(b"same", b"", ACK), (b"other", b"", ACK)]) == (2, 0)
    assert r.lrange(PROC, 0, -1) == [b"same"]


def test_settle_and_claim_in_one_script(r: redis.Redis) -> None:
    ops = QueueOps(r, Q)
    fill(r, 7)
    first = ops.claim("w", 3)
    moved, dropped, claimed = ops.settle_claim("w", [(raw, b"", ACK) for raw in first], 3)
    assert (moved, dropped, claimed) == (3, 0, [b"m3", b"m4", b"m5"])
    assert r.lrange(PROC, 0, -1) == [b"m5", b"m4", b"m3"]
    moved, _, claimed = ops.settle_claim("w", [(raw, b"", ACK) for raw in claimed], 0)
    assert (moved, claimed) == (3, [])
    assert r.lrange(PENDING, 0, -1) == [b"m6"] and not r.exists(PROC)


def test_a_redelivered_message_ends_a_batch_or_is_claimed_alone(r: redis.Redis) -> None:
    """A message whose envelope says ``"attempt"`` above 1 (however it is spaced, with more
    than one digit) stops a claim before it, and is then claimed alone; ``"attempt":1``, 0, a
    missing field or garbage are first deliveries and batch as usual."""
    first = [
        b'{"v":1,"id":"a","attempt":1,"payload":{"attempt":7}}',
        b'{"v":1,"id":"b"}',
        b'{"v":1,"id":"c","attempt": 1}',
        b'{"v":1,"id":"d","attempt":0}',
        b"garbage",
    ]
    again = [b'{"v":1,"id":"e","attempt":2}', b'{"v":1,"id":"f", "attempt" : 10}',
             b'{"v":1,"id":"g","attempt":11,"payload":1}']  # fmt: skip
    r.lpush(PENDING, *first[:2], again[0], *first[2:], *again[1:])  # oldest first
    ops = QueueOps(r, Q)
    assert ops.claim("w", 100) == first[:2]
    assert ops.claim("w", 100) == [again[0]]
    assert ops.claim("w", 100) == first[2:]
    assert ops.claim("w", 100) == [again[1]]
    assert ops.claim("w", 100) == [again[2]]
    assert ops.claim("w", 100) == []
