-- resolve: what finished among the prerequisites of a queue's waiting messages (lib/after.lua),
-- in one step. A handled one is crossed off; the last one crossed off makes the message
-- pending (at its priority level; its record says pending). Any other end (dead, cancelled,
-- or no record: 'unknown') ends the waiting message too, with that reason: cancelled when the
-- prerequisite was, else dead-lettered; and whatever waits for it in turn is told (the
-- queue's outbox). An outcome for a message that no longer waits, or a prerequisite already
-- crossed off, does nothing: telling twice is harmless. Returns {released, ended, told}.
--
-- KEYS[1]  bus:{q}:waiting
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:dead
-- KEYS[4]  bus:{q}:dead:dropped (the dead letters trimmed past the cap)
-- KEYS[5]  bus:{q}:tracking (the records' gate)
-- KEYS[6]  bus:{q}:outbox
-- ARGV[1]  dead_max (0: no cap)
-- ARGV[2..] quadruples: waiting id, prerequisite (queue, LF, id), its state, reason
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/levels.lua
--#include lib/after.lua

local base = base_key(KEYS[5])
local q = string.match(KEYS[5], '{(.*)}')
local ttl = gate_ttl(KEYS[5]) or 86400000
local now = now_ms()
local released, ended, dead = 0, 0, 0
for i = 2, #ARGV, 4 do
  local id, pre, state, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local wait = base .. 'wait:' .. id
  if redis.call('HEXISTS', wait, pre) == 1 then
    if state == 'handled' then
      redis.call('HDEL', wait, pre)
      local left = redis.call('HLEN', wait) - 1
      if left > 0 then
        redis.call('HSET', rec_key(KEYS[5], id), 'waiting_for', left)
      else
        enqueue(KEYS[2], redis.call('HGET', wait, 'raw'), false)
        redis.call('DEL', wait)
        redis.call('ZREM', KEYS[1], id)
        rec_write(KEYS[5], ttl, id, 'pending', now, {'waiting_for', 0})
        released = released + 1
      end
    else
      local raw = redis.call('HGET', wait, 'raw')
      local pq, pid = string.match(pre, '^([^\n]*)\n(.*)$')
      local why = 'it waited for ' .. pid .. ' on ' .. pq .. ', which '
      if state == 'unknown' then why = why .. 'has no record (never tracked, or expired)'
      else why = why .. 'ended ' .. state end
      if reason ~= '' then why = why .. ': ' .. reason end
      redis.call('DEL', wait)
      redis.call('ZREM', KEYS[1], id)
      if state == 'cancelled' then
        count(KEYS[2], 'cancelled', 1)
        rec_write(KEYS[5], ttl, id, 'cancelled', now, {'reason', why})
        tell(KEYS[5], id, 'cancelled', why)
      else
        redis.call('LPUSH', KEYS[3], cjson.encode({reason = why, at = now, queue = q, raw = raw}))
        dead = dead + 1
        rec_write(KEYS[5], ttl, id, 'dead', now, {'reason', why})
        tell(KEYS[5], id, 'dead', why)
      end
      ended = ended + 1
    end
  end
end
count(KEYS[2], 'dead', dead)
local cap = tonumber(ARGV[1])
if dead > 0 and cap > 0 then
  local n = redis.call('LLEN', KEYS[3])
  if n > cap then
    redis.call('LTRIM', KEYS[3], 0, cap - 1)
    redis.call('INCRBY', KEYS[4], n - cap)
  end
end
return {released, ended, told}
