-- A worker's settle carries a token, new for each batch: after a lost reply the worker settles
-- the same batch again with the same token, and the script then moves nothing if the first call
-- ran (bus:{q}:settled:<consumer> holds the token of the last settle that moved something).
-- Moving "only if the value is still in the list" is not enough: an identical envelope claimed
-- by the lost call would be taken for the one acked. Written after the moves, never first: the
-- moves' first write is one Redis allows out of memory, and a SET is not.

local function replayed(marker, token)
  return token ~= '' and redis.call('GET', marker) == token
end

local function mark_settled(marker, token, moved)
  if token ~= '' and moved > 0 then redis.call('SET', marker, token, 'PX', 86400000) end
end
