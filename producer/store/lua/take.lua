-- take (at-most-once): up to n of the oldest pending messages, popped and counted as taken
-- (producer/store/counts.py). Returns them oldest first.
--
-- KEYS[1]  bus:{q}:pending
-- ARGV[1]  n
--#include lib/count.lua

local got = redis.call('RPOP', KEYS[1], ARGV[1])
if not got then return {} end
count(KEYS[1], 'taken', #got)
return got
