-- requeue: dead letters back on the queue. LREM from the tail: the entries a chunk requeues are
-- the oldest, so each is found at once. A tracked message's record is pending again, attempt 1.
-- Returns how many moved.
--
-- KEYS[1]  bus:{q}:dead
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- ARGV     pairs: the dead entry, the raw message to LPUSH back
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/levels.lua

local now = now_ms()
local ttl = false
local moved = 0
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    enqueue(KEYS[2], ARGV[i + 1], false)
    moved = moved + 1
    local id = tracked_raw(ARGV[i + 1])
    if id then
      if ttl == false then ttl = gate_ttl(KEYS[3]) end
      if ttl then
        rec_write(KEYS[3], ttl, id, 'pending', now, {'attempt', 1, 'requeued_ms', now})
      end
    end
  end
end
count(KEYS[2], 'requeued', moved)
return moved
