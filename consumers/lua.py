"""The Lua scripts behind the worker's list moves (see :mod:`consumers.lists`).

A move removes a value from where it is and pushes it where it goes only if the removal found
it, all inside one script: two actors (a worker recovering its list, a reaper, an operator
requeuing dead letters) can never both move one message, and no message is ever in neither list.

The same scripts write the records of tracked messages (:mod:`producer.store.tracking`): each takes
the queue's gate key ``bus:{q}:tracking`` as its last key, and a queue without one costs a GET.
"""

from producer.store.counts import LUA as _COUNT
from producer.store.tracking import LUA as _TRACK

# claim(pending, processing, n, gate): up to n of the oldest pending messages move to the
# processing list, where LMOVE RIGHT LEFT one by one would leave them, in a few commands whatever
# their number; the tracked ones are in-flight. A redelivered one (its envelope's first
# "attempt" above 1) ends a batch, or makes one alone. Returns them oldest first. CLAIM: KEYS[1]
# pending, KEYS[2] processing, KEYS[3] the gate; ARGV[1] n.
_CLAIM = """
local function redelivered(raw)
  local at = string.find(raw, '"attempt":', 1, true)  -- plain: the cheap test
  if at then
    local c = string.byte(raw, at + 10)
    if c == 49 then  -- "1": the first attempt, unless more digits follow
      local d = string.byte(raw, at + 11)
      if d == 44 or d == 125 then return false end  -- "," or "}"
    end
  end
  local attempt = string.match(raw, '"attempt"%s*:%s*(%d+)')
  return attempt ~= nil and tonumber(attempt) > 1
end

local function claim(pending, processing, n, gate)
  if n <= 0 then return {} end
  local got = redis.call('LRANGE', pending, -n, -1)  -- newest ... oldest
  if #got == 0 then return got end
  -- A redelivered message (attempt > 1) is claimed alone, and a batch stops before one: if
  -- it kills its worker again, only its own attempt is counted for it, never its batch's.
  local k = 0
  for j = #got, 1, -1 do
    if redelivered(got[j]) then
      if k == 0 then k = 1 end
      break
    end
    k = k + 1
  end
  redis.call('LTRIM', pending, 0, -k - 1)
  local oldest_first = {}
  for j = 1, k do oldest_first[j] = got[#got - j + 1] end
  for i = 1, k, 1000 do  -- unpack() is bounded by Lua's stack
    redis.call('LPUSH', processing, unpack(oldest_first, i, math.min(i + 999, k)))
  end
  local ttl = gate_ttl(gate)
  if ttl then
    local worker, now = string.match(processing, ':processing:(.*)$'), now_ms()
    for j = 1, k do
      local id, attempt = tracked_raw(oldest_first[j])
      if id then
        redis.call('HDEL', rec_key(gate, id), 'progress', 'progress_text', 'progress_ms')
        rec_write(gate, ttl, id, 'in-flight', now, {'worker', worker, 'attempt', attempt})
      end
    end
  end
  return oldest_first
end
"""

# Liveness runs on Redis's clock, never a host's: a worker whose clock is off by a minute must
# be neither reaped while alive nor kept while dead. One instant per script call, as a script is
# one step: a retry's due time and its record's retrying_ms are from the same reading.
NOW_MS = """
local _now = nil
local function now_ms()
  if not _now then
    local t = redis.call('TIME')
    _now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return _now
end
"""

CLAIM = NOW_MS + _TRACK + _CLAIM + "return claim(KEYS[1], KEYS[2], tonumber(ARGV[1]), KEYS[3])\n"

# Shared body. KEYS[1] from (a processing list), [2] pending, [3] dead, [4] the dead letters'
# drop counter; triples from ARGV[first]: raw, value to push, how:
#   A  remove only (the ack)
#   R  RPUSH pending: the consuming end, popped next (a message given back)
#   L  LPUSH pending: the back of the line (a retry)
#   Z<ms>  ZADD delayed, due <ms> from now on Redis's clock (a retry after a backoff; LPUSH
#          pending if the same bytes are delayed already: a zset cannot hold them twice)
#   D  LPUSH dead (garbage, attempts exhausted)
#   P  LPUSH dead without removing (at-most-once: the message is in no list any more)
# Every move but P happens only if the removal found the value. Past dead_max entries (0: no
# cap) the oldest dead letters are trimmed and counted. ``delayed``: the queue's delayed zset.
# Returns {moved, dropped}.
# A tracked message's how is "<how>\n<id>\n<attempt>\n<note>", and the move writes its record
# (``gate``): A handled (the value: its JSON result or empty; the note: why a result was not
# stored), R pending when the value is the raw unchanged (never handed to the handler), else
# retrying like L and Z (the note: the error), D and P dead (the note: the reason).
# The common case, a batch all handled, takes one LTRIM: when every move is an ack and the acked
# values are the list's oldest, in claim order (as a claim left them), they are its tail.
_MOVE_TRIPLES = """
local function split_how(how)
  if #how == 1 or not string.find(how, '\\n', 1, true) then return how end
  return string.match(how, '^([^\\n]*)\\n([^\\n]*)\\n([^\\n]*)\\n(.*)$')
end

local function settle_record(gate, ttl, code, id, attempt, note, raw, value, due)
  local now = now_ms()
  local f = {'attempt', attempt}
  if code == 'A' then
    redis.call('HDEL', rec_key(gate, id), 'error', 'due_ms')  -- an earlier attempt's
    table.insert(f, 'progress'); table.insert(f, '1')
    if value ~= '' then table.insert(f, 'result'); table.insert(f, value) end
    if note ~= '' then table.insert(f, 'result_error'); table.insert(f, note) end
    rec_write(gate, ttl, id, 'handled', now, f)
  elseif code == 'R' and raw == value then
    rec_write(gate, ttl, id, 'pending', now, f)
  elseif code == 'D' or code == 'P' then
    table.insert(f, 'reason'); table.insert(f, note)
    rec_write(gate, ttl, id, 'dead', now, f)
  else
    table.insert(f, 'error'); table.insert(f, note)
    if due then table.insert(f, 'due_ms'); table.insert(f, due) end
    rec_write(gate, ttl, id, 'retrying', now, f)
  end
end

-- The records of the tracked moves in ARGV (all of them made), if the queue keeps records.
local function settle_records(first, gate)
  local ttl = nil
  for i = first, #ARGV, 3 do
    local code, id, attempt, note = split_how(ARGV[i + 2])
    if id then
      ttl = ttl or gate_ttl(gate)
      if not ttl then return end
      settle_record(gate, ttl, code, id, attempt, note, ARGV[i], ARGV[i + 1], nil)
    end
  end
end

local function ack_tail(first)
  local k = math.floor((#ARGV - first + 1) / 3)
  if k < 2 then return false end
  local tail = redis.call('LRANGE', KEYS[1], -k, -1)
  if #tail ~= k then return false end
  for j = 1, k do
    local i = first + 3 * (j - 1)
    local how = ARGV[i + 2]
    if (how ~= 'A' and string.sub(how, 1, 2) ~= 'A\\n') or tail[k - j + 1] ~= ARGV[i] then
      return false
    end
  end
  redis.call('LTRIM', KEYS[1], 0, -k - 1)
  count(KEYS[2], 'acked', k)
  return true
end

local function move_triples(first, dead_max, delayed, gate)
  if ack_tail(first) then
    settle_records(first, gate)
    return {math.floor((#ARGV - first + 1) / 3), 0}
  end
  local moved, to_dead, acked, listed_dead = 0, 0, 0, 0
  local ttl = false  -- the records' TTL, read at the first tracked move
  for i = first, #ARGV, 3 do
    local code, id, attempt, note = split_how(ARGV[i + 2])
    if code == 'P' or redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
      local due = nil
      if code == 'R' then redis.call('RPUSH', KEYS[2], ARGV[i + 1])
      elseif code == 'L' then redis.call('LPUSH', KEYS[2], ARGV[i + 1])
      elseif string.byte(code, 1) == 90 then  -- Z<ms>
        due = now_ms() + tonumber(string.sub(code, 2))
        if redis.call('ZADD', delayed, 'NX', due, ARGV[i + 1]) == 0 then
          -- the same bytes wait there already (identical envelopes): a zset holds them
          -- once, so this one is retried at once instead
          redis.call('LPUSH', KEYS[2], ARGV[i + 1])
          due = nil
        end
      elseif code == 'D' or code == 'P' then
        redis.call('LPUSH', KEYS[3], ARGV[i + 1])
        to_dead = to_dead + 1
        if code == 'D' then listed_dead = listed_dead + 1 end
      elseif code == 'A' then
        acked = acked + 1
      end
      moved = moved + 1
      if id then
        if ttl == false then ttl = gate_ttl(gate) end
        if ttl then settle_record(gate, ttl, code, id, attempt, note, ARGV[i], ARGV[i + 1], due) end
      end
    end
  end
  count(KEYS[2], 'acked', acked)
  count(KEYS[2], 'dead', listed_dead)  -- P's were counted as taken when popped
  local dropped = 0
  if to_dead > 0 and dead_max > 0 then
    local n = redis.call('LLEN', KEYS[3])
    if n > dead_max then
      redis.call('LTRIM', KEYS[3], 0, dead_max - 1)
      dropped = n - dead_max
      redis.call('INCRBY', KEYS[4], dropped)
    end
  end
  return {moved, dropped}
end
"""

# A worker's settle carries a token, new for each batch: after a lost reply the worker settles
# the same batch again with the same token, and the script then moves nothing if the first call
# ran (``bus:{q}:settled:<consumer>`` holds the token of the last settle that moved something).
# Moving "only if the value is still in the list" is not enough: an identical envelope claimed
# by the lost call would be taken for the one acked. Written after the moves, never first: the
# moves' first write is one Redis allows out of memory, and a SET is not.
_REPLAY = """
local function replayed(marker, token)
  return token ~= '' and redis.call('GET', marker) == token
end

local function mark_settled(marker, token, moved)
  if token ~= '' and moved > 0 then redis.call('SET', marker, token, 'PX', 86400000) end
end
"""

# KEYS as above, [5] delayed, [6] the gate, [7] the settle marker; ARGV[1] dead_max, ARGV[2] the
# settle token ('' none), then triples.
MOVE = (
    NOW_MS
    + _TRACK
    + _COUNT
    + _MOVE_TRIPLES
    + _REPLAY
    + """
if replayed(KEYS[7], ARGV[2]) then return {0, 0} end
local settled = move_triples(3, tonumber(ARGV[1]), KEYS[5], KEYS[6])
mark_settled(KEYS[7], ARGV[2], settled[1])
return settled
"""
)

# KEYS[1] processing, [2] pending, [3] dead, [4] the drop counter, [5] delayed, [6] the gate,
# [7] the settle marker; ARGV[1] dead_max, ARGV[2] how many to claim next, ARGV[3] the settle
# token, then triples. Settle a batch, then claim the next one: one round trip per batch.
# Returns {moved, dropped, claimed oldest first...}.
SETTLE_CLAIM = (
    NOW_MS
    + _TRACK
    + _COUNT
    + _MOVE_TRIPLES
    + _REPLAY
    + _CLAIM
    + """
local settled = {0, 0}
if not replayed(KEYS[7], ARGV[3]) then
  settled = move_triples(4, tonumber(ARGV[1]), KEYS[5], KEYS[6])
  mark_settled(KEYS[7], ARGV[3], settled[1])
end
local out = claim(KEYS[2], KEYS[1], tonumber(ARGV[2]), KEYS[6])
table.insert(out, 1, settled[2])
table.insert(out, 1, settled[1])
return out
"""
)

# KEYS[1..4] as for MOVE (a processing list, pending, dead, the drop counter), [5] the consumers
# zset, [6] delayed, [7] the gate, [8] the consumer's lease; ARGV[1] consumer, ARGV[2] ttl (ms),
# ARGV[3] dead_max, then triples. Only if the consumer is still silent for the ttl (it did not
# come back meanwhile) and no process holds its name (a list whose consumer is not registered
# at all may belong to a live worker whose registry entry was lost): move, and once its list
# is empty, unregister it. Returns {-1, 0} when it is alive.
REAP = (
    NOW_MS
    + _TRACK
    + _COUNT
    + _MOVE_TRIPLES
    + """
local beat = redis.call('ZSCORE', KEYS[5], ARGV[1])
if beat and tonumber(beat) > now_ms() - tonumber(ARGV[2]) then return {-1, 0} end
if redis.call('EXISTS', KEYS[8]) == 1 then return {-1, 0} end
local result = move_triples(4, tonumber(ARGV[3]), KEYS[6], KEYS[7])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[5], ARGV[1]) end
return result
"""
)

# At-most-once. TAKE: KEYS[1] pending; ARGV[1] n: up to n of the oldest, popped and counted as
# taken (producer/store/counts.py), oldest first. TAKEN: KEYS[1] counts; ARGV[1] n: count n taken by
# a blocking pop. GIVE_BACK: KEYS[1] pending, [2] counts; ARGV the messages taken and not
# handled, oldest first: back at the consuming end, uncounted. TAKEN and GIVE_BACK may run out
# of memory (allow-oom): a count, and messages that were in the list a moment ago, must not be
# refused while the messages are in this worker's hands only.
TAKE = (
    _COUNT
    + """
local got = redis.call('RPOP', KEYS[1], ARGV[1])
if not got then return {} end
count(KEYS[1], 'taken', #got)
return got
"""
)
TAKEN = """#!lua flags=allow-oom
return redis.call('HINCRBY', KEYS[1], 'taken', ARGV[1])
"""
GIVE_BACK = """#!lua flags=allow-oom
for i = #ARGV, 1, -1 do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('HINCRBY', KEYS[2], 'taken', -#ARGV)
return #ARGV
"""

# KEYS[1] delayed, [2] pending, [3] the gate; ARGV[1] at most how many. The messages due by
# Redis's clock, oldest due first, leave the zset and are LPUSHed in that order (so the oldest
# due is popped first), in one step: two movers can never both move one message. A tracked one
# that was scheduled is now pending (a retry stays retrying). Returns how many moved.
MOVE_DUE = (
    NOW_MS
    + _TRACK
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for i = 1, #due, 1000 do  -- unpack() is bounded by Lua's stack
  local last = math.min(i + 999, #due)
  redis.call('ZREM', KEYS[1], unpack(due, i, last))
  redis.call('LPUSH', KEYS[2], unpack(due, i, last))
end
local ttl = #due > 0 and gate_ttl(KEYS[3])
if ttl then
  for i = 1, #due do
    local id = tracked_raw(due[i])
    if id and redis.call('HGET', rec_key(KEYS[3], id), 'state') == 'scheduled' then
      rec_write(KEYS[3], ttl, id, 'pending', now, {})
    end
  end
end
return #due
"""
)

# KEYS[1] the gate, [2] the record; ARGV[1] the id, [2] the state, then field, value pairs.
# The worker's own writes: in-flight for a message it took with a blocking pop (no script
# claimed it), and the at-most-once outcomes (no script settles them). Returns 1 if written.
RECORD = (
    NOW_MS
    + _TRACK
    + """
local ttl = gate_ttl(KEYS[1])
if not ttl then return 0 end
local fields = {}
for i = 3, #ARGV do fields[i - 2] = ARGV[i] end
if ARGV[2] == 'in-flight' then
  redis.call('HDEL', KEYS[2], 'progress', 'progress_text', 'progress_ms')
end
rec_write(KEYS[1], ttl, ARGV[1], ARGV[2], now_ms(), fields)
return 1
"""
)

# KEYS[1] the gate, [2] the record; ARGV[1] the worker, [2] the fraction done, [3] a short text.
# Only while the record says the message is in this worker's hands. Returns 1 if written.
PROGRESS = (
    NOW_MS
    + _TRACK
    + """
local ttl = gate_ttl(KEYS[1])
if not ttl then return 0 end
local held = redis.call('HMGET', KEYS[2], 'state', 'worker')
if held[1] ~= 'in-flight' or held[2] ~= ARGV[1] then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[2], 'progress', ARGV[2], 'progress_text', ARGV[3], 'progress_ms', now,
           'updated_ms', now)
redis.call('PEXPIRE', KEYS[2], ttl)
keep_gate(KEYS[1], ttl)
return 1
"""
)
