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
from typing import Any

import redis

from producer.store import keys
from producer.store.counts import LUA as COUNT_LUA

STATES = ("scheduled", "pending", "in-flight", "retrying", "handled", "dead")
FINAL = ("handled", "dead")
INTS = ("attempt", "due_ms", "created_ms", "updated_ms", "progress_ms", "requeued_ms")
STAMPS = {state: state.replace("-", "_") + "_ms" for state in STATES}
MAX_ID_CHARS = 256

# The Lua side, shared by the producer's push and the worker's scripts (consumers/lua.py). A
# record key is the gate's key with ``tracking`` replaced by ``msg:<id>``: the same hash slot.
LUA = """
local function rec_key(gate, id) return string.sub(gate, 1, -9) .. 'msg:' .. id end

-- The records' TTL (ms) while the queue keeps records, else nil.
local function gate_ttl(gate)
  local v = redis.call('GET', gate)
  if v then return tonumber(v) end
  return nil
end

-- The gate outlives every record.
local function keep_gate(gate, ttl)
  if redis.call('PTTL', gate) < ttl then redis.call('SET', gate, ttl, 'PX', ttl) end
end

-- Set id's state and fields (a flat list), stamp <state>_ms; the record lives ttl ms more.
local function rec_write(gate, ttl, id, state, now, fields)
  local key = rec_key(gate, id)
  local stamp = string.gsub(state, '-', '_') .. '_ms'  -- in-flight: in_flight_ms
  redis.call('HSET', key, 'id', id, 'queue', string.match(gate, '{(.*)}'), 'state', state,
             'updated_ms', now, stamp, now, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
  keep_gate(gate, ttl)
end

-- The id and attempt of a message whose envelope says "track": true (nil otherwise): for the
-- raws a script finds itself (a claim, the mover). A plain search first, JSON only on a hit.
local function tracked_raw(raw)
  if not string.find(raw, '"track"', 1, true) then return nil end  -- plain: the cheap test
  if not string.find(raw, '"track"%s*:%s*true') then return nil end
  local ok, obj = pcall(cjson.decode, raw)
  if not ok or type(obj) ~= 'table' or obj['track'] ~= true then return nil end
  local id = obj['id']
  if type(id) ~= 'string' or id == '' or string.find(id, '\\n', 1, true) then return nil end
  local attempt = obj['attempt']
  if type(attempt) ~= 'number' or attempt < 1 then attempt = 1 end
  return id, attempt
end
"""

# KEYS[1] pending, [2] delayed, [3] the gate, [4..] the messages' records; ARGV[1] the depth
# limit (0: none), [2] the delay (ms; -1: not delayed), [3] the due time (ms since the epoch;
# -1: from the delay), [4] the records' TTL (ms), then the messages in push order. Like
# PUSH_IF_ROOM and SCHEDULE (producer/producer.py), and each record is created in the same step.
# Returns {1, depth or scheduled count after, due} or {0, pending + delayed, due} (no room).
PUSH = (
    LUA
    + COUNT_LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS - 3
local delay, due = tonumber(ARGV[2]), tonumber(ARGV[3])
local later = delay >= 0 or due >= 0
if due < 0 then due = now + math.max(delay, 0) end
local limit = tonumber(ARGV[1])
if limit > 0 then
  local waiting = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if waiting + n > limit then return {0, waiting, due} end
end
local ttl = tonumber(ARGV[4])
local depth = 0
local prefix = #rec_key(KEYS[3], '')
for i = 1, n do
  local raw, id = ARGV[4 + i], string.sub(KEYS[3 + i], prefix + 1)
  if later then
    redis.call('ZADD', KEYS[2], due + (i - 1) / 1000, raw)
    rec_write(KEYS[3], ttl, id, 'scheduled', now, {'attempt', 1, 'created_ms', now, 'due_ms', due})
  else
    depth = redis.call('LPUSH', KEYS[1], raw)
    rec_write(KEYS[3], ttl, id, 'pending', now, {'attempt', 1, 'created_ms', now})
  end
end
count(KEYS[1], 'pushed', n)
if later then return {1, redis.call('ZCARD', KEYS[2]), due} end
return {1, depth, due}
"""
)


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
        elif key == "result":
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
