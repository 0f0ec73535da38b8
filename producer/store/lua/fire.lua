-- fire: one tick of a periodic schedule (consumers/scheduler.py), sent at most once whatever
-- number of schedulers fire it: the schedule's last tick (bus:{q}:schedules, field <name>) is
-- compared and moved forward in the same step as the push (at the message's priority level,
-- counted; its record written when it is tracked). Without a message, the last tick only moves
-- forward (ticks passed over). Returns 1 when it sent, 2 when it only moved the tick, 0 when
-- that tick or a later one was there already.
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:schedules
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- KEYS[4]  bus:{q}:msg:<id> (its record; only when tracked)
-- ARGV[1]  the schedule's name
-- ARGV[2]  the tick (ms since the epoch)
-- ARGV[3]  the message ('': none)
-- ARGV[4]  its priority level (0 to 9)
-- ARGV[5]  the records' TTL (ms; with KEYS[4])
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/levels.lua

local last = redis.call('HGET', KEYS[2], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == '' then return 2 end
local level = tonumber(ARGV[4])
redis.call('LPUSH', level_key(KEYS[1], level), ARGV[3])
if level > 0 then
  set_gate(KEYS[1])
  herald(KEYS[1])
end
count(KEYS[1], 'pushed', 1)
if KEYS[4] then
  local id = string.sub(KEYS[4], #rec_key(KEYS[3], '') + 1)
  local now = now_ms()
  rec_write(KEYS[3], tonumber(ARGV[5]), id, 'pending', now, {'attempt', 1, 'created_ms', now})
end
return 1
