-- take (at-most-once): up to n of the oldest pending messages, the highest priority level first
-- (lib/levels.lua), popped and counted as taken (producer/store/counts.py). Returns them oldest
-- first.
--
-- KEYS[1]  bus:{q}:pending
-- ARGV[1]  n
--#include lib/count.lua
--#include lib/levels.lua

local n = tonumber(ARGV[1])
local got = {}
if n <= 0 then return got end
for _, source in ipairs(claim_order(KEYS[1])) do
  local popped = redis.call('RPOP', source[1], math.min(n - #got, source[2]))
  if popped then
    for j = 1, #popped do got[#got + 1] = popped[j] end
    if #got >= n then break end
  end
end
count(KEYS[1], 'taken', #got)
return got
