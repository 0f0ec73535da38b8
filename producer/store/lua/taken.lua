#!lua flags=allow-oom
-- taken (at-most-once): count n messages taken by a blocking pop (it cannot count them
-- itself). May run out of memory (allow-oom): a count of messages that are in this worker's hands
-- only must not be refused. Returns the new count.
--
-- KEYS[1]  bus:{q}:counts
-- ARGV[1]  n

return redis.call('HINCRBY', KEYS[1], 'taken', ARGV[1])
