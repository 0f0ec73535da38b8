"""Atomic list operations on a queue: ack, retry, dead-letter, recover a processing list.

Every move is one Lua script that removes the message from where it is *and* pushes it where it
goes only if the removal found it, so two actors (a worker and a reaper, say) can never both
move the same message: nothing is lost and nothing is doubled by the move itself.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from producer import keys
from producer.envelope import EnvelopeError, decode, now_ms

# KEYS[1] from, KEYS[2] to; ARGV[1] the raw value in `from`, ARGV[2] the value to push,
# ARGV[3] "L" (LPUSH: back of the line) or "R" (RPUSH: the consuming end, next to be popped).
_MOVE_ONE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] == 'R' then redis.call('RPUSH', KEYS[2], ARGV[2])
else redis.call('LPUSH', KEYS[2], ARGV[2]) end
return 1
"""


class QueueOps:
    """The moves of one queue, on one client."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.pending = keys.pending(queue)
        self.dead = keys.dead(queue)
        self._move = client.register_script(_MOVE_ONE)

    def ack(self, consumer: str, raw: bytes) -> int:
        """Forget a handled message; 1 if it was still in the consumer's processing list."""
        return int(self.client.lrem(keys.processing(self.queue, consumer), 1, raw))  # type: ignore[arg-type]

    def retry(self, consumer: str, raw: bytes, new_raw: bytes) -> bool:
        """Put a failed message back at the end of the line, as ``new_raw`` (attempt + 1)."""
        return self._move_one(
            keys.processing(self.queue, consumer), self.pending, raw, new_raw, "L"
        )

    def dead_letter(self, consumer: str | None, raw: bytes, reason: str) -> bool:
        """Move ``raw`` from the processing list (or nowhere, for at-most-once) to ``dead``."""
        entry = dead_entry(raw, reason, queue=self.queue, consumer=consumer)
        if consumer is None:
            self.client.lpush(self.dead, entry)
            return True
        return self._move_one(keys.processing(self.queue, consumer), self.dead, raw, entry, "L")

    def recover(self, consumer: str) -> tuple[int, int]:
        """Requeue a consumer's whole processing list at the consuming end of ``pending``, oldest
        next, each with attempt + 1; garbage goes to ``dead``. Returns (requeued, dead)."""
        source = keys.processing(self.queue, consumer)
        requeued = dead = 0
        # Head is newest: RPUSHing head-first leaves the oldest at the tail, popped first.
        raws: list[bytes] = self.client.lrange(source, 0, -1)  # type: ignore[assignment]
        for raw in raws:
            try:
                new_raw = decode(raw).next_attempt().encode()
            except EnvelopeError as exc:
                entry = dead_entry(
                    raw, f"undecodable: {exc.reason}", queue=self.queue, consumer=consumer
                )
                dead += self._move_one(source, self.dead, raw, entry, "L")
                continue
            requeued += self._move_one(source, self.pending, raw, new_raw, "R")
        return requeued, dead

    def _move_one(self, src: str, dst: str, raw: bytes, value: bytes, side: str) -> bool:
        return bool(self._move(keys=[src, dst], args=[raw, value, side]))


def dead_entry(raw: bytes, reason: str, **where: str | None) -> bytes:
    """The JSON stored in a dead-letter list: why, when, where (``queue=``, ``consumer=``...),
    and the raw bytes intact (as ``raw``, or ``raw_b64`` when they are not UTF-8)."""
    entry: dict[str, Any] = {"reason": reason, "at": now_ms(), **where}
    try:
        entry["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_b64"] = base64.b64encode(raw).decode("ascii")
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
