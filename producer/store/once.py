"""Idempotency keys: a push made at most once per key within a window.

A client that retries a push after a timeout cannot know whether the first one went through;
with the same key, the retry pushes nothing if it did. The first push with a key pushes and
keeps, for ``BUS_IDEMPOTENCY_WINDOW_S``, in ``bus:{q}:once:<key>``
(:func:`producer.store.keys.once`): the request's fingerprint, the envelope it pushed and the
answer (depth or scheduled count, due time). A push with that key while it lives pushes nothing
and gets that envelope and answer, marked as a repeat; one with the same key and another request
(its queue, payload, delay, tracking or time limit differ) is refused with
:class:`~producer.errors.IdempotencyConflict`. The check and the push are one script
(``push_once.lua``): concurrent repeats push once. A push refused for the depth limit keeps
nothing (a later retry may go through). Each key holds its message until the window ends: the
memory is the rate of keyed pushes x the window x the message's size.

A key is 1 to :data:`MAX_KEY_CHARS` printable ASCII characters without spaces (a UUID, a request
id); it names a key of the queue's hash slot, so it works on a cluster.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from producer.errors import PayloadError

MAX_KEY_CHARS = 255
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)  # fmt: skip


def check_key(key: Any) -> str:
    """``key`` if it can be an idempotency key; ValueError saying why not."""
    if not isinstance(key, str) or not key:
        raise ValueError("an idempotency key is a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"an idempotency key is at most {MAX_KEY_CHARS} characters, "
                         f"got {len(key)}")  # fmt: skip
    if not all("!" <= c <= "~" for c in key):
        raise ValueError("an idempotency key is printable ASCII without spaces")
    return key


def fingerprint(queue: str, payload: Any, delay_ms: int, due_ms: int, track: bool,
                timeout_s: float | None, priority: int = 0) -> str:  # fmt: skip
    """What makes two pushes the same request: the queue, the payload and the options, as
    canonical JSON (keys sorted), hashed. Raises PayloadError for a payload JSON cannot
    carry (as the push itself would)."""
    try:
        request = [queue, payload, delay_ms, due_ms, track, timeout_s]
        text = _CANONICAL.encode([*request, priority] if priority else request)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"the payload is not strict JSON: {exc}") from None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
