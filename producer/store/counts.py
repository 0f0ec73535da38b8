"""The conservation check of a queue: counters kept by the scripts that move its messages.

``bus:{q}:counts`` (a hash in the queue's slot) counts what enters and leaves the queue's lists
(``pending``, ``delayed`` and the workers' ``processing`` lists), each counter written in the
same script as the move it counts:

``pushed``    put on ``pending`` or ``delayed`` by a producer of the bus (web, Python API)
``requeued``  dead letters put back on ``pending``
``acked``     at-least-once: handled, removed from a processing list by the ack
``dead``      at-least-once: removed from ``pending`` or a processing list to ``dead``
``taken``     at-most-once: popped by a worker (handled, dead-lettered or lost after that)

So at every moment, for a queue whose producers all count their pushes::

    pushed + requeued = acked + dead + taken + pending + processing + delayed

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

from producer.store import keys

FIELDS = ("pushed", "requeued", "acked", "dead", "taken")

# count(pending, field, n): add n to one counter of the queue whose pending list is given (the
# counts key is derived from it: the same slot). For the scripts that move messages.
LUA = """
local function count(pending, field, n)
  if n ~= 0 then redis.call('HINCRBY', string.sub(pending, 1, -8) .. 'counts', field, n) end
end
"""

# KEYS[1] pending; ARGV the messages in push order. LPUSH them and count them, in one step.
# Returns the queue's depth after the push.
PUSH = (
    LUA
    + """
local depth
for i = 1, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  depth = redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
count(KEYS[1], 'pushed', #ARGV)
return depth
"""
)

# KEYS[1] counts, [2] pending, [3] delayed, [4] the consumers zset. The counters and what the
# lists hold, read in one step (the registered workers' processing lists are derived from the
# consumers zset: the same slot). Returns {field, value, ...}.
BALANCE = """
local out = {}
local c = redis.call('HMGET', KEYS[1], 'pushed', 'requeued', 'acked', 'dead', 'taken')
local names = {'pushed', 'requeued', 'acked', 'dead', 'taken'}
for i = 1, 5 do out[#out + 1] = names[i]; out[#out + 1] = tonumber(c[i] or 0) end
local prefix = string.sub(KEYS[2], 1, -8) .. 'processing:'
local processing = 0
for _, name in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  processing = processing + redis.call('LLEN', prefix .. name)
end
for _, kv in ipairs({{'pending', redis.call('LLEN', KEYS[2])}, {'processing', processing},
                     {'delayed', redis.call('ZCARD', KEYS[3])}}) do
  out[#out + 1] = kv[1]; out[#out + 1] = kv[2]
end
return out
"""


def read_balance(client: redis.Redis, queue: str) -> dict[str, int]:
    """``queue``'s counters and what its lists hold, read in one step, and ``unaccounted``:
    what came in minus what went out minus what is there (0 when every message is accounted
    for)."""
    q_keys = [keys.counts(queue), keys.pending(queue), keys.delayed(queue), keys.consumers(queue)]
    reply: list[Any] = client.eval(BALANCE, len(q_keys), *q_keys)
    out = {_text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}
    came = out["pushed"] + out["requeued"]
    went = out["acked"] + out["dead"] + out["taken"]
    out["unaccounted"] = came - went - out["pending"] - out["processing"] - out["delayed"]
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
