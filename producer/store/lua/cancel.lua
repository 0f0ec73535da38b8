-- cancel: a tracked message cancelled by its id (producer/store/tracking.py). Waiting (pending,
-- scheduled, retrying), its record says cancelled at once, and the script that next meets the
-- message (a claim, the mover, a worker's start of it) drops it, counted; in a handler's hands
-- (in-flight), its record gets cancel_ms: the handler's Context.cancelled says so, and the
-- attempt is not retried. The outcome: cancelled, signalled, finished (handled, dead or
-- cancelled already: nothing done) or unknown (no record). A message that
-- waits for others (waiting) leaves bus:{q}:waiting at once, counted. Whatever waits for the
-- cancelled message is told (lib/after.lua). Returns {outcome, state before, told}.
--
-- KEYS[1]  bus:{q}:tracking (the records' gate)
-- KEYS[2]  bus:{q}:msg:<id> (the record)
-- KEYS[3]  bus:{q}:waiting
-- KEYS[4]  bus:{q}:wait:<id>
-- KEYS[5]  bus:{q}:pending (its counts)
-- ARGV[1]  the id
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/after.lua

local state = redis.call('HGET', KEYS[2], 'state')
if not state then return {'unknown', '', 0} end
if state == 'handled' or state == 'dead' or state == 'cancelled' then return {'finished', state, 0} end
local ttl = gate_ttl(KEYS[1]) or redis.call('PTTL', KEYS[2])
local now = now_ms()
if state == 'in-flight' then
  if not redis.call('HGET', KEYS[2], 'cancel_ms') then
    redis.call('HSET', KEYS[2], 'cancel_ms', now, 'updated_ms', now)
  end
  return {'signalled', state, 0}
end
if state == 'waiting' then
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[3], ARGV[1])
  count(KEYS[5], 'cancelled', 1)
end
rec_write(KEYS[1], ttl, ARGV[1], 'cancelled', now, {'cancelled_from', state})
tell(KEYS[1], ARGV[1], 'cancelled', 'cancelled')
return {'cancelled', state, told}
