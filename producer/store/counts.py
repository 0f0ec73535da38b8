"""The conservation check of a queue: counters kept by the scripts that move its messages.

``bus:{q}:counts`` (a hash in the queue's slot) counts what enters and leaves the queue's lists
(``pending``, ``delayed`` and the workers' ``processing`` lists), each counter written in the
same script as the move it counts:

``pushed``    put on ``pending``, ``delayed`` or ``waiting`` (a message pushed with ``after``)
              by a producer of the bus (web, Python API)
``requeued``  dead letters put back on ``pending``
``acked``     at-least-once: handled, removed from a processing list by the ack
``dead``      at-least-once: removed from ``pending`` or a processing list to ``dead``
``taken``     at-most-once: popped by a worker (handled, dead-lettered or lost after that)
``cancelled`` at-least-once: a tracked message cancelled while it waited, dropped by the script
              that next met it, or cancelled while its handler ran and removed at its settle
              (at-most-once, the latter are counted as taken); a waiting message cancelled,
              or ended by a prerequisite cancelled
``dead``      (also) a waiting message ended by a prerequisite dead or without a record

So at every moment, for a queue whose producers all count their pushes::

    pushed + requeued = acked + dead + taken + cancelled
                        + pending + processing + delayed + waiting

and :func:`read_balance` returns the difference as ``unaccounted``: above 0, messages left the
lists without a script of the bus moving them (a ``DEL``, a processing list whose worker is in
no registry, an at-most-once worker that died between its pop and its count); below 0, more is
in the lists than was counted in (a producer that ``LPUSH``es without counting, a script's
effects half applied). A producer in another language counts its push in the same step::

    MULTI
    LPUSH bus:{q}:pending <envelope>
    HINCRBY bus:{q}:counts pushed 1
    EXEC

Redis losing whole script effects (an AOF rolled back) keeps the balance: the counters go back
with the moves. What handlers did outside Redis cannot be seen from here.
"""

from __future__ import annotations

from typing import Any

import redis

from producer.store import keys, scripts

FIELDS = (
    "pushed",
    "requeued",
    "acked",
    "dead",
    "taken",
    "cancelled",
)  # lua/lib/count.lua, lua/balance.lua


def read_balance(client: redis.Redis, queue: str) -> dict[str, int]:
    """``queue``'s counters and what its lists hold, read in one step, and ``unaccounted``:
    what came in minus what went out minus what is there (0 when every message is accounted
    for)."""
    q_keys = [keys.counts(queue), keys.pending(queue), keys.delayed(queue), keys.consumers(queue),
              keys.waiting(queue)]  # fmt: skip
    reply: list[Any] = scripts.BALANCE(client, q_keys)
    out = {_text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}
    came = out["pushed"] + out["requeued"]
    went = out["acked"] + out["dead"] + out["taken"] + out["cancelled"]
    held = out["pending"] + out["processing"] + out["delayed"] + out["waiting"]
    out["unaccounted"] = came - went - held
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
