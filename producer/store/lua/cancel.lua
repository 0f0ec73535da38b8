-- cancel: a tracked message cancelled by its id (producer/store/tracking.py). Waiting (pending,
-- scheduled, retrying), its record says cancelled at once, and the script that next meets the
-- message (a claim, the mover, a worker's start of it) drops it, counted; in a handler's hands
-- (in-flight), its record gets cancel_ms: the handler's Context.cancelled says so, and the
-- attempt is not retried. Returns {outcome, state before}: cancelled, signalled, finished
-- (handled, dead or cancelled already: nothing done) or unknown (no record).
--
-- KEYS[1]  bus:{q}:tracking (the records' gate)
-- KEYS[2]  bus:{q}:msg:<id> (the record)
-- ARGV[1]  the id
--#include lib/now.lua
--#include lib/records.lua

local state = redis.call('HGET', KEYS[2], 'state')
if not state then return {'unknown', ''} end
if state == 'handled' or state == 'dead' or state == 'cancelled' then return {'finished', state} end
local ttl = gate_ttl(KEYS[1]) or redis.call('PTTL', KEYS[2])
local now = now_ms()
if state == 'in-flight' then
  if not redis.call('HGET', KEYS[2], 'cancel_ms') then
    redis.call('HSET', KEYS[2], 'cancel_ms', now, 'updated_ms', now)
  end
  return {'signalled', state}
end
rec_write(KEYS[1], ttl, ARGV[1], 'cancelled', now, {'cancelled_from', state})
return {'cancelled', state}
