-- count(pending, field, n): add n to one counter of the queue whose pending list is given
-- (bus:{q}:counts, derived from bus:{q}:pending: the same slot). For the scripts that move
-- messages: a queue's balance (producer/store/counts.py) changes in the same step as its lists.

local function count(pending, field, n)
  if n ~= 0 then redis.call('HINCRBY', string.sub(pending, 1, -8) .. 'counts', field, n) end
end
