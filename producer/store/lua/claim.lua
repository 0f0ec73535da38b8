-- claim: up to n of the oldest pending messages move to a worker's processing list
-- (lib/claim.lua says how). Returns them oldest first.
--
-- KEYS[1]  bus:{q}:pending
-- KEYS[2]  bus:{q}:processing:<consumer>
-- KEYS[3]  bus:{q}:tracking (the records' gate)
-- ARGV[1]  n: at most how many
--#include lib/claim.lua

return claim(KEYS[1], KEYS[2], tonumber(ARGV[1]), KEYS[3])
