-- push_once: one message pushed under an idempotency key, at most once within the key's
-- window. The first push with the key pushes (now, or delayed; with its record when tracked;
-- refused, and not remembered, past the depth limit) and remembers in bus:{q}:once:<key> the
-- request's fingerprint, the envelope and the answer; a push with the key while that lives
-- pushes nothing and returns what was remembered. Returns:
--   {1, depth or scheduled count after, due}           pushed
--   {0, pending + delayed, due}                        no room: nothing pushed, nothing kept
--   {2, same fingerprint (1) or not (0), raw, result, due}   a repeat: nothing pushed
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:delayed
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- KEYS[4]  bus:{q}:once:<key>
-- KEYS[5]  bus:{q}:msg:<id> (the record; only when tracked)
-- ARGV[1]  the depth limit (0: none)
-- ARGV[2]  the delay (ms; -1: not delayed)
-- ARGV[3]  the due time (ms since the epoch; -1: from the delay)
-- ARGV[4]  the records' TTL (ms; with KEYS[5])
-- ARGV[5]  the key's window (ms)
-- ARGV[6]  the request's fingerprint
-- ARGV[7]  the message
-- ARGV[8]  its priority level (0 to 9, lib/levels.lua)
--#include lib/now.lua
--#include lib/records.lua
--#include lib/count.lua
--#include lib/levels.lua

local seen = redis.call('HMGET', KEYS[4], 'fp', 'raw', 'result', 'due')
if seen[1] then
  return {2, seen[1] == ARGV[6] and 1 or 0, seen[2], seen[3], seen[4]}
end
local now = now_ms()
local delay, due = tonumber(ARGV[2]), tonumber(ARGV[3])
local later = delay >= 0 or due >= 0
if due < 0 then due = now + math.max(delay, 0) end
local limit = tonumber(ARGV[1])
if limit > 0 then
  local waiting = depth(KEYS[1]) + redis.call('ZCARD', KEYS[2])
  if waiting + 1 > limit then return {0, waiting, due} end
end
local raw, result = ARGV[7], 0
if later then
  redis.call('ZADD', KEYS[2], due, raw)
  result = redis.call('ZCARD', KEYS[2])
else
  local level = tonumber(ARGV[8])
  redis.call('LPUSH', level_key(KEYS[1], level), raw)
  if level > 0 then
    set_gate(KEYS[1])
    herald(KEYS[1])
  end
  result = depth(KEYS[1])
end
if KEYS[5] then
  local id = string.sub(KEYS[5], #rec_key(KEYS[3], '') + 1)
  local ttl = tonumber(ARGV[4])
  if later then
    rec_write(KEYS[3], ttl, id, 'scheduled', now, {'attempt', 1, 'created_ms', now, 'due_ms', due})
  else
    rec_write(KEYS[3], ttl, id, 'pending', now, {'attempt', 1, 'created_ms', now})
  end
end
count(KEYS[1], 'pushed', 1)
redis.call('HSET', KEYS[4], 'fp', ARGV[6], 'raw', raw, 'result', result, 'due', due)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return {1, result, due}
