-- release_name: let a worker's name go, if this process still holds it. Returns 1 if it did.
--
-- KEYS[1]  bus:{q}:owner:<consumer> (its name's lease)
-- ARGV[1]  this process's token

if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
