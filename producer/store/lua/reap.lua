-- reap: give back a silent consumer's processing list (lib/moves.lua), only if it is still
-- silent for the ttl (it did not come back meanwhile) and no process holds its name (a list whose
-- consumer is not registered at all may belong to a live worker whose registry entry was lost);
-- once its list is empty, unregister it. Returns {moved, dropped, told}, or {-1, 0, 0} when it is alive.
--
-- KEYS[1]  bus:{q}:processing:<consumer>
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:dead
-- KEYS[4]  bus:{q}:dead:dropped
-- KEYS[5]  bus:{q}:consumers (the registry: consumer -> last heartbeat, ms)
-- KEYS[6]  bus:{q}:delayed
-- KEYS[7]  bus:{q}:tracking (the records' gate)
-- KEYS[8]  bus:{q}:owner:<consumer> (its name's lease)
-- ARGV[1]  consumer
-- ARGV[2]  ttl (ms)
-- ARGV[3]  dead_max (0: no cap)
-- ARGV[4..] triples: raw, value to push, how
--#include lib/moves.lua

local beat = redis.call('ZSCORE', KEYS[5], ARGV[1])
if beat and tonumber(beat) > now_ms() - tonumber(ARGV[2]) then return {-1, 0, 0} end
if redis.call('EXISTS', KEYS[8]) == 1 then return {-1, 0, 0} end
local result = move_triples(4, tonumber(ARGV[3]), KEYS[6], KEYS[7])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[5], ARGV[1]) end
return result
