-- wait: a message that waits for others (producer/store/after.py) is kept aside, with the
-- prerequisites it still needs, and its record says waiting; it is counted pushed (the queue's
-- balance counts the waiting ones). Returns 1, or 0 when a message of that id waits already
-- (nothing written).
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
-- ARGV[5]  when the sweep first looks at them (ms from now)
-- ARGV[6..] the prerequisites: queue, LF, id
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua

if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = now_ms()
local fields = {'raw', ARGV[2]}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = '1' end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
rec_write(KEYS[3], tonumber(ARGV[3]), ARGV[1], 'waiting', now,
          {'attempt', 1, 'created_ms', now, 'after', ARGV[4], 'waiting_for', #ARGV - 5})
count(KEYS[5], 'pushed', 1)
return 1
