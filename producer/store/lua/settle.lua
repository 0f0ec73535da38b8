-- settle: a batch's outcomes (acks, retries, dead letters, messages given back), in one step
-- (lib/moves.lua says how each move is written). After a lost reply, the same batch settled
-- again with the same token moves nothing (lib/replay.lua). Returns {moved, dropped, told}.
--
-- KEYS[1]  bus:{q}:processing:<consumer> (at-most-once: bus:{q}:pending, never read)
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:dead
-- KEYS[4]  bus:{q}:dead:dropped (the dead letters trimmed past the cap)
-- KEYS[5]  bus:{q}:delayed
-- KEYS[6]  bus:{q}:tracking (the records' gate)
-- KEYS[7]  bus:{q}:settled:<consumer> (the settle marker)
-- ARGV[1]  dead_max: the dead letters' cap (0: none)
-- ARGV[2]  the settle token ('': none)
-- ARGV[3..] triples: raw, value to push, how
--#include lib/moves.lua
--#include lib/replay.lua

if replayed(KEYS[7], ARGV[2]) then return {0, 0, 0} end
local settled = move_triples(3, tonumber(ARGV[1]), KEYS[5], KEYS[6])
mark_settled(KEYS[7], ARGV[2], settled[1])
return settled
