-- settle_claim: settle a batch (as settle.lua), then claim the next one (as claim.lua): one
-- round trip per batch. Returns {moved, dropped, told, claimed oldest first...}.
--
-- KEYS[1]  bus:{q}:processing:<consumer>
-- KEYS[2]  bus:{q}:pending
-- KEYS[3]  bus:{q}:dead
-- KEYS[4]  bus:{q}:dead:dropped
-- KEYS[5]  bus:{q}:delayed
-- KEYS[6]  bus:{q}:tracking (the records' gate)
-- KEYS[7]  bus:{q}:settled:<consumer> (the settle marker)
-- ARGV[1]  dead_max (0: no cap)
-- ARGV[2]  how many to claim next
-- ARGV[3]  the settle token ('': none)
-- ARGV[4..] triples: raw, value to push, how
--#include lib/moves.lua
--#include lib/replay.lua
--#include lib/claim.lua

local settled = {0, 0, 0}
if not replayed(KEYS[7], ARGV[3]) then
  settled = move_triples(4, tonumber(ARGV[1]), KEYS[5], KEYS[6])
  mark_settled(KEYS[7], ARGV[3], settled[1])
end
local out = claim(KEYS[2], KEYS[1], tonumber(ARGV[2]), KEYS[6])
table.insert(out, 1, settled[3])
table.insert(out, 1, settled[2])
table.insert(out, 1, settled[1])
return out
