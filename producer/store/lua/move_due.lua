-- move_due: the delayed messages due by Redis's clock, oldest due first, leave the zset and
-- are LPUSHed in that order (so the oldest due is popped first), each on its priority level's
-- list (lib/levels.lua), in one step: two movers can never both move one message. A tracked one that was scheduled is now pending (a retry stays
-- retrying). Returns how many moved.
--
-- KEYS[1]  bus:{q}:delayed
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- ARGV[1]  at most how many
--#include lib/now.lua
--#include lib/records.lua
--#include lib/levels.lua
--#include lib/count.lua

find_levels(KEYS[2])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local ttl = #due > 0 and gate_ttl(KEYS[3])
local plain, dropped = {}, 0  -- priority 0: pushed together; a level's, to its own list
for i = 1, #due do
  local id = ttl and tracked_raw(due[i])
  if id and rec_cancelled(KEYS[3], id) then  -- cancelled while it waited: dropped, counted
    dropped = dropped + 1
  elseif level_of(due[i]) == 0 then
    plain[#plain + 1] = due[i]
  else
    enqueue(KEYS[2], due[i], false)
  end
end
count(KEYS[2], 'cancelled', dropped)
for i = 1, #due, 1000 do  -- unpack() is bounded by Lua's stack
  redis.call('ZREM', KEYS[1], unpack(due, i, math.min(i + 999, #due)))
end
for i = 1, #plain, 1000 do
  redis.call('LPUSH', KEYS[2], unpack(plain, i, math.min(i + 999, #plain)))
end
if ttl then
  for i = 1, #due do
    local id = tracked_raw(due[i])
    if id and redis.call('HGET', rec_key(KEYS[3], id), 'state') == 'scheduled' then
      rec_write(KEYS[3], ttl, id, 'pending', now, {})
    end
  end
end
return #due
