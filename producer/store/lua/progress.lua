-- progress: a tracked message's progress, only while its record says it is in this worker's
-- hands. Returns 1 if written.
--
-- KEYS[1]  bus:{q}:tracking (the records' gate)
-- KEYS[2]  bus:{q}:msg:<id> (the record)
-- ARGV[1]  the worker
-- ARGV[2]  the fraction done
-- ARGV[3]  a short text
--#include lib/now.lua
--#include lib/records.lua

local ttl = gate_ttl(KEYS[1])
if not ttl then return 0 end
local held = redis.call('HMGET', KEYS[2], 'state', 'worker')
if held[1] ~= 'in-flight' or held[2] ~= ARGV[1] then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[2], 'progress', ARGV[2], 'progress_text', ARGV[3], 'progress_ms', now,
           'updated_ms', now)
redis.call('PEXPIRE', KEYS[2], ttl)
keep_gate(KEYS[1], ttl)
return 1
