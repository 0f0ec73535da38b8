-- move_triples(first, dead_max, delayed, gate): the moves of a batch, the settle of a worker
-- and the reaper's. KEYS[1] from (a processing list), [2] pending, [3] dead, [4] the dead
-- letters' drop counter; triples from ARGV[first]: raw, value to push, how:
--   A  remove only (the ack)
--   R  RPUSH pending: the consuming end, popped next (a message given back)
--   L  LPUSH pending: the back of the line (a retry)
-- (pending: the list of the message's priority level, lib/levels.lua)
--   Z<ms>  ZADD delayed, due <ms> from now on Redis's clock (a retry after a backoff; LPUSH
--          pending if the same bytes are delayed already: a zset cannot hold them twice)
--   D  LPUSH dead (garbage, attempts exhausted)
--   P  LPUSH dead without removing (at-most-once: the message is in no list any more)
--   C  remove only, counted as cancelled: a tracked message cancelled while it waited, met
--      by the worker that popped it
-- A tracked message whose record asks its handler to stop (cancelled while in-flight,
-- lua/cancel.lua) is not retried, dead-lettered or given back: its move becomes C (its record
-- says cancelled), unless it is an ack (the handler finished: handled).
-- Every move but P happens only if the removal found the value. Past dead_max entries (0: no
-- cap) the oldest dead letters are trimmed and counted. delayed: the queue's delayed zset.
-- Returns {moved, dropped, told}: told, the outbox entries written for messages that wait for
-- the tracked ones finished here (lib/after.lua).
-- A tracked message's how is "<how>\n<id>\n<attempt>\n<note>", and the move writes its record
-- (gate): A handled (the value: its JSON result or empty; the note: why a result was not
-- stored), R pending when the value is the raw unchanged (never handed to the handler), else
-- retrying like L and Z (the note: the error), D and P dead (the note: the reason).
-- The common case, a batch all handled, takes one LTRIM: when every move is an ack and the acked
-- values are the list's oldest, in claim order (as a claim left them), they are its tail.
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/levels.lua
--#include lib/after.lua

local function split_how(how)
  if #how == 1 or not string.find(how, '\n', 1, true) then return how end
  return string.match(how, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
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
    tell(gate, id, 'handled', '')
  elseif code == 'R' and raw == value then
    rec_write(gate, ttl, id, 'pending', now, f)
  elseif code == 'D' or code == 'P' then
    table.insert(f, 'reason'); table.insert(f, note)
    rec_write(gate, ttl, id, 'dead', now, f)
    tell(gate, id, 'dead', note)
  elseif code == 'C' then
    if note ~= '' then table.insert(f, 'reason'); table.insert(f, note) end
    rec_write(gate, ttl, id, 'cancelled', now, f)
    tell(gate, id, 'cancelled', note)
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
    if (how ~= 'A' and string.sub(how, 1, 2) ~= 'A\n') or tail[k - j + 1] ~= ARGV[i] then
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
    return {math.floor((#ARGV - first + 1) / 3), 0, told}
  end
  local moved, to_dead, acked, listed_dead, cancelled = 0, 0, 0, 0, 0
  local ttl = false  -- the records' TTL, read at the first tracked move
  for i = first, #ARGV, 3 do
    local code, id, attempt, note = split_how(ARGV[i + 2])
    local unlisted = code == 'P'  -- at-most-once: in no list, counted as taken already
    if id and code ~= 'A' and code ~= 'C' and rec_cancel_asked(gate, id) then
      code, note = 'C', 'cancelled while its handler ran'
    end
    if unlisted or redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
      local due = nil
      if code == 'R' then enqueue(KEYS[2], ARGV[i + 1], true)
      elseif code == 'L' then enqueue(KEYS[2], ARGV[i + 1], false)
      elseif string.byte(code, 1) == 90 then  -- Z<ms>
        due = now_ms() + tonumber(string.sub(code, 2))
        if redis.call('ZADD', delayed, 'NX', due, ARGV[i + 1]) == 0 then
          -- the same bytes wait there already (identical envelopes): a zset holds them
          -- once, so this one is retried at once instead
          enqueue(KEYS[2], ARGV[i + 1], false)
          due = nil
        end
      elseif code == 'D' or code == 'P' then
        redis.call('LPUSH', KEYS[3], ARGV[i + 1])
        to_dead = to_dead + 1
        if code == 'D' then listed_dead = listed_dead + 1 end
      elseif code == 'A' then
        acked = acked + 1
      elseif code == 'C' and not unlisted then
        cancelled = cancelled + 1
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
  count(KEYS[2], 'cancelled', cancelled)
  local dropped = 0
  if to_dead > 0 and dead_max > 0 then
    local n = redis.call('LLEN', KEYS[3])
    if n > dead_max then
      redis.call('LTRIM', KEYS[3], 0, dead_max - 1)
      dropped = n - dead_max
      redis.call('INCRBY', KEYS[4], dropped)
    end
  end
  return {moved, dropped, told}
end
