#!lua flags=allow-oom
-- give_back (at-most-once): the messages taken and never handed to the handler go back at the
-- consuming end of their levels, uncounted. May run out of memory (allow-oom): messages that were in the list a
-- moment ago must not be refused while they are in this worker's hands only. Returns how many.
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:counts
-- ARGV     the messages, oldest first
--#include lib/levels.lua

for i = #ARGV, 1, -1 do enqueue(KEYS[1], ARGV[i], true) end
redis.call('HINCRBY', KEYS[2], 'taken', -#ARGV)
return #ARGV
