#!lua flags=allow-oom
-- heartbeat: while this process holds the name's lease (or nobody does), renew it and stamp the
-- heartbeat now; returns 1. Another process holds it: nothing is written, returns 0. May run out
-- of memory (allow-oom): it only overwrites what exists, and a live worker whose heartbeat Redis
-- refused would look dead to the other workers' reapers, which would requeue the messages it is
-- handling.
--
-- KEYS[1]  bus:{q}:consumers (the registry: consumer -> last heartbeat, ms)
-- KEYS[2]  bus:{q}:owner:<consumer> (its name's lease)
-- ARGV[1]  consumer
-- ARGV[2]  this process's token
-- ARGV[3]  the lease's ttl (ms)
--#include lib/now.lua

local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
return 1
