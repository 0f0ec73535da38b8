-- link: a waiting message asks to be told when a prerequisite finishes (lib/after.lua). Returns
-- {state, reason}: its record's state now (and reason); 'unknown' when it has no record. The
-- link is made only while the prerequisite is not finished: a finished one's state is the
-- answer, for the caller to resolve. Linking twice is harmless (a set).
--
-- KEYS[1]  bus:{q}:msg:<id> (the prerequisite's record)
-- KEYS[2]  bus:{q}:then:<id>
-- ARGV[1]  the waiting message: its queue, LF, its id

local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown', ''} end
local reason = redis.call('HGET', KEYS[1], 'reason') or ''
if state == 'handled' or state == 'dead' or state == 'cancelled' then return {state, reason} end
redis.call('SADD', KEYS[2], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {state, reason}
