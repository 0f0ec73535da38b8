-- flush_stats: one process's stats snapshot, and what it counted since its last flush added to
-- the bus-wide totals (idempotent: the applied hash holds this run's absolute values); at most
-- once a second, a sample of the history series' sums (producer/observe/totals.py,
-- HISTORY_SERIES: the same names as the series below).
--
-- KEYS[1]  bus:{stats}:<role>:<ident> (the snapshot)
-- KEYS[2]  bus:{stats}:index
-- KEYS[3]  bus:{stats}:applied:<role>:<ident>:<run> (what this run added already)
-- KEYS[4]  bus:{stats}:totals
-- KEYS[5]  bus:{stats}:history
-- KEYS[6]  bus:{stats}:history:tick
-- ARGV[1]  TTL (ms)
-- ARGV[2]  updated (ms)
-- ARGV[3]  the applied hash's TTL (ms)
-- ARGV[4]  the history's length
-- ARGV[5]  2n: how many ARGV entries the snapshot takes
-- ARGV[6..] the snapshot's n field/value pairs, then the totals' field/value pairs (absolute)
--#include lib/now.lua

local ttl, updated = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = tonumber(ARGV[5])
for i = 6, 5 + n, 200 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, 5 + n)))
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], updated, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (updated - ttl))
for i = 6 + n, #ARGV, 2 do
  local field, value = ARGV[i], tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[3], field) or '0')
  if value > old then
    redis.call('HINCRBY', KEYS[4], field, value - old)
    redis.call('HSET', KEYS[3], field, value)
  end
end
if #ARGV > 5 + n then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
if redis.call('SET', KEYS[6], '1', 'PX', 1000, 'NX') then
  local sample = {t = now_ms()}
  local series = {'pushed', 'handled', 'published', 'published_zero', 'received', 'lost',
                  'dead_lettered'}
  for _, name in ipairs(series) do sample[name] = 0 end
  local all = redis.call('HGETALL', KEYS[4])
  for i = 1, #all, 2 do
    local f = all[i]
    local counter = string.match(f, '^([^|]+)')
    if sample[counter] and counter ~= 't' and
       (counter ~= 'handled' or string.find(f, '|role=worker', 1, true)) then
      sample[counter] = sample[counter] + tonumber(all[i + 1])
    end
  end
  redis.call('RPUSH', KEYS[5], cjson.encode(sample))
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[4]), -1)
end
return 1
