-- claim(pending, processing, n, gate): up to n of the oldest pending messages, the highest
-- priority level first (lib/levels.lua), move to the processing list, where LMOVE RIGHT LEFT one
-- by one would leave them, in a few commands whatever their number; the tracked ones are
-- in-flight. A redelivered one (its envelope's first "attempt" above 1) ends a batch, or makes
-- one alone. Returns them oldest first.
--#include lib/now.lua
--#include lib/records.lua
--#include lib/levels.lua
--#include lib/count.lua

local function redelivered(raw)
  local at = string.find(raw, '"attempt":', 1, true)  -- plain: the cheap test
  if at then
    local c = string.byte(raw, at + 10)
    if c == 49 then  -- "1": the first attempt, unless more digits follow
      local d = string.byte(raw, at + 11)
      if d == 44 or d == 125 then return false end  -- "," or "}"
    end
  end
  local attempt = string.match(raw, '"attempt"%s*:%s*(%d+)')
  return attempt ~= nil and tonumber(attempt) > 1
end

-- Up to n of src's oldest, oldest first, taken off src; and whether the batch ends there (a
-- redelivered message: claimed alone if it comes first, else left for the next claim).
local function claim_from(src, n, first)
  local got = redis.call('LRANGE', src, -n, -1)  -- newest ... oldest
  local k, ends = 0, false
  for j = #got, 1, -1 do
    if redelivered(got[j]) then
      -- If it kills its worker again, only its own attempt is counted for it, never its
      -- batch's.
      if k == 0 and first then k = 1 end
      ends = true
      break
    end
    k = k + 1
  end
  if k > 0 then redis.call('LTRIM', src, 0, -k - 1) end
  local out = {}
  for j = 1, k do out[j] = got[#got - j + 1] end
  return out, ends
end

local function claim(pending, processing, n, gate)
  if n <= 0 then return {} end
  local oldest_first = {}
  for _, source in ipairs(claim_order(pending)) do
    local got, ends = claim_from(source[1], math.min(n - #oldest_first, source[2]),
                                 #oldest_first == 0)
    for j = 1, #got do oldest_first[#oldest_first + 1] = got[j] end
    if ends or #oldest_first >= n then break end
  end
  local ttl = #oldest_first > 0 and gate_ttl(gate)
  if ttl then  -- tracked ones are in-flight now; one cancelled while it waited is dropped
    local worker, now, kept = string.match(processing, ':processing:(.*)$'), now_ms(), {}
    for j = 1, #oldest_first do
      local id, attempt = tracked_raw(oldest_first[j])
      if not id then
        kept[#kept + 1] = oldest_first[j]
      elseif not rec_cancelled(gate, id) then
        kept[#kept + 1] = oldest_first[j]
        redis.call('HDEL', rec_key(gate, id), 'progress', 'progress_text', 'progress_ms')
        rec_write(gate, ttl, id, 'in-flight', now, {'worker', worker, 'attempt', attempt})
      end
    end
    count(pending, 'cancelled', #oldest_first - #kept)
    oldest_first = kept
  end
  local k = #oldest_first
  for i = 1, k, 1000 do  -- unpack() is bounded by Lua's stack
    redis.call('LPUSH', processing, unpack(oldest_first, i, math.min(i + 999, k)))
  end
  return oldest_first
end
