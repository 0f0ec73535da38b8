"""Dead letters of a queue: what the web, the tools and operators read, requeue and purge.

``bus:{q}:dead`` holds one JSON entry per message a worker gave up on, newest at the head:
``{"reason", "at" (ms), "queue", "consumer", "raw"}`` (``raw_b64`` instead of ``raw`` when
the bytes are not UTF-8), made by :func:`dead_entry`. Workers write them in the script that
settles or reaps their messages (``lua/lib/moves.lua``: the moves D and P, chosen by
:mod:`consumers.moves`), the subscriber with an LPUSH. Requeuing moves an entry's message back
onto the queue as a first attempt, in one script that removes before it pushes
(``lua/requeue.lua``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import redis

from producer.store import keys, scripts
from producer.store.envelope import decode, now_ms

REQUEUE_CHUNK = 500  # entries per script: a short call however long the dead list is


class DeadLetters:
    """The dead letters of one queue, on one client."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client = client
        self.queue = queue
        self.dead = keys.dead(queue)
        self.pending = keys.pending(queue)
        self.gate = keys.tracking(queue)

    def total(self) -> int:
        """How many dead letters the queue holds."""
        return int(self.client.llen(self.dead))

    def entries(self, start: int = 0, count: int = 100) -> list[dict[str, Any]]:
        """Dead letters, newest first, as dicts (``reason``, ``at``, ``raw`` or ``raw_b64``...)."""
        out = []
        entries: list[bytes] = self.client.lrange(self.dead, start, start + count - 1)  # type: ignore[assignment]
        for entry in entries:
            try:
                out.append(json.loads(entry))
            except ValueError:
                out.append({"reason": "unreadable dead entry", "raw_b64": _b64(entry)})
        return out

    def requeue(self, count: int | None = None) -> tuple[int, int]:
        """Push dead letters (oldest first) back onto pending as fresh first attempts, at most
        ``count``. Entries whose raw bytes are not a valid envelope stay. Works through the
        list a chunk per script, from its oldest end, so a huge dead list never blocks Redis
        for long. Returns (requeued, kept)."""
        requeued = kept = 0
        while count is None or requeued < count:
            want = REQUEUE_CHUNK if count is None else min(REQUEUE_CHUNK, count - requeued)
            # The `want` oldest entries past the `kept` ones, which stay at the tail.
            entries: list[bytes] = self.client.lrange(self.dead, -(kept + want), -(kept + 1))  # type: ignore[assignment]
            if not entries:
                break
            pairs: list[bytes] = []
            invalid = 0
            for entry in reversed(entries):  # oldest first
                try:
                    env = decode(json.loads(entry)["raw"].encode())
                except (ValueError, KeyError, TypeError, AttributeError):
                    invalid += 1
                    continue
                pairs.extend([entry, replace(env, attempt=1).encode()])
            requeue_keys = [self.dead, self.pending, self.gate]
            moved = int(scripts.REQUEUE(self.client, requeue_keys, pairs)) if pairs else 0
            requeued += moved
            kept += invalid
            if moved < len(pairs) // 2:
                break  # someone else moved entries meanwhile: stop rather than guess
        return requeued, kept

    def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(self.dead)
        pipe.delete(self.dead)
        return int(pipe.execute()[0])


def dead_entry(raw: bytes, reason: str, **where: str | None) -> bytes:
    """The JSON stored in a dead-letter list: why, when, where (``queue=``, ``consumer=``...),
    and the raw bytes intact (as ``raw``, or ``raw_b64`` when they are not UTF-8)."""
    entry: dict[str, Any] = {"reason": reason, "at": now_ms(), **where}
    try:
        entry["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_b64"] = _b64(raw)
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
