-- claim_lmove: the drain reference's claim: up to n messages moved one LMOVE at a time from
-- pending to a processing list, in one script. Returns them oldest first.
--
-- KEYS[1]  the pending list
-- KEYS[2]  the processing list
-- ARGV[1]  n

local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[i] = v
end
return out
