-- wait: a message that waits for others (producer/store/after.py) is kept aside, with the
-- prerequisites it still needs, and its record says waiting; it is counted pushed (the queue's
-- balance counts the waiting ones). With an idempotency key (KEYS[6], as push_once.lua keeps
-- it) a repeat within the key's window writes nothing and returns the first one's envelope.
-- Returns {1, waiting for} (kept aside), {0} when a message of that id waits already (nothing
-- written), or {2, same fingerprint (1) or not (0), raw, waiting for} (a repeat).
--
-- KEYS[1]  bus:{q}:waiting
-- KEYS[2]  bus:{q}:wait:<id>
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- KEYS[4]  bus:{q}:msg:<id> (its record)
-- KEYS[5]  bus:{q}:pending (its counts)
-- ARGV[1]  the id
-- ARGV[2]  the envelope
-- ARGV[3]  the records' TTL (ms)
-- ARGV[4]  the prerequisites as the record shows them (JSON)
-- KEYS[6]  bus:{q}:once:<key> (only with an idempotency key)
-- ARGV[5]  when the sweep first looks at them (ms from now)
-- ARGV[6]  the key's window (ms; with KEYS[6])
-- ARGV[7]  the request's fingerprint (with KEYS[6])
-- ARGV[8..] the prerequisites: queue, LF, id
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua

if KEYS[6] then
  local seen = redis.call('HMGET', KEYS[6], 'fp', 'raw', 'result')
  if seen[1] then return {2, seen[1] == ARGV[7] and 1 or 0, seen[2], seen[3]} end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0} end
local now = now_ms()
local n = #ARGV - 7
redis.call('HSET', KEYS[2], 'raw', ARGV[2])
for first = 8, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack
  local fields = {}
  for i = first, math.min(first + 999, #ARGV) do
    fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = '1'
  end
  redis.call('HSET', KEYS[2], unpack(fields))
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
rec_write(KEYS[3], tonumber(ARGV[3]), ARGV[1], 'waiting', now,
          {'attempt', 1, 'created_ms', now, 'after', ARGV[4], 'waiting_for', n})
count(KEYS[5], 'pushed', 1)
if KEYS[6] then
  redis.call('HSET', KEYS[6], 'fp', ARGV[7], 'raw', ARGV[2], 'result', n)
  redis.call('PEXPIRE', KEYS[6], ARGV[6])
end
return {1, n}
