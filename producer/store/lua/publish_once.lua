-- publish_once: one message published under an idempotency key, at most once within the key's
-- window. The first publish with the key publishes and remembers in the key the request's
-- fingerprint, the envelope and how many subscribers received it; a publish with the key while
-- that lives publishes nothing and returns what was remembered. Returns:
--   {1, receivers}                                            published
--   {2, same fingerprint (1) or not (0), raw, receivers}      a repeat: nothing published
-- The key is {bus:ch:<channel>}:once:<key>: its hash tag is the channel, so on a cluster it
-- lives in the slot of the channel's shard (SPUBLISH from a script must stay in its slot).
--
-- KEYS[1]  {bus:ch:<channel>}:once:<key>
-- ARGV[1]  the channel, bus:ch:<channel>
-- ARGV[2]  PUBLISH, or SPUBLISH (sharded pub/sub)
-- ARGV[3]  the key's window (ms)
-- ARGV[4]  the request's fingerprint
-- ARGV[5]  the message

local seen = redis.call('HMGET', KEYS[1], 'fp', 'raw', 'result')
if seen[1] then
  return {2, seen[1] == ARGV[4] and 1 or 0, seen[2], seen[3]}
end
local command = ARGV[2] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH'
local receivers = redis.call(command, ARGV[1], ARGV[5])
redis.call('HSET', KEYS[1], 'fp', ARGV[4], 'raw', ARGV[5], 'result', receivers)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, receivers}
