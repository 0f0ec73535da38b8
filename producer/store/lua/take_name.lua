-- take_name: take a worker's name if nobody holds it: returns 0 (taken, or already ours); else
-- the lease's remaining ms, at least 1: PTTL says 0 in the lease's last millisecond (and -1 for a
-- key without a TTL), and 0 would read as "taken".
--
-- KEYS[1]  bus:{q}:owner:<consumer> (its name's lease)
-- ARGV[1]  this process's token
-- ARGV[2]  the ttl (ms)

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return math.max(redis.call('PTTL', KEYS[1]), 1)
