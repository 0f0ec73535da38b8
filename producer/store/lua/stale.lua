-- stale: the consumers silent for at least the ttl, by Redis's clock.
--
-- KEYS[1]  bus:{q}:consumers (the registry: consumer -> last heartbeat, ms)
-- ARGV[1]  ttl (ms)
--#include lib/now.lua

return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]))
