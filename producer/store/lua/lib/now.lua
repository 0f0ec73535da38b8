-- now_ms(): Redis's clock in ms since the epoch, read once per script call.
--
-- Liveness runs on Redis's clock, never a host's: a worker whose clock is off by a minute must
-- be neither reaped while alive nor kept while dead. One instant per script call, as a script is
-- one step: a retry's due time and its record's retrying_ms are from the same reading.

local _now = nil
local function now_ms()
  if not _now then
    local t = redis.call('TIME')
    _now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return _now
end
