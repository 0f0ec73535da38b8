-- The records of tracked messages (producer/store/tracking.py), written by the scripts that
-- move them. A record key is the gate's key (bus:{q}:tracking) with "tracking" replaced by
-- "msg:<id>": the same hash slot.

local function rec_key(gate, id) return string.sub(gate, 1, -9) .. 'msg:' .. id end

-- The records' TTL (ms) while the queue keeps records, else nil.
local function gate_ttl(gate)
  local v = redis.call('GET', gate)
  if v then return tonumber(v) end
  return nil
end

-- The gate outlives every record.
local function keep_gate(gate, ttl)
  if redis.call('PTTL', gate) < ttl then redis.call('SET', gate, ttl, 'PX', ttl) end
end

-- Set id's state and fields (a flat list), stamp <state>_ms; the record lives ttl ms more.
local function rec_write(gate, ttl, id, state, now, fields)
  local key = rec_key(gate, id)
  local stamp = string.gsub(state, '-', '_') .. '_ms'  -- in-flight: in_flight_ms
  redis.call('HSET', key, 'id', id, 'queue', string.match(gate, '{(.*)}'), 'state', state,
             'updated_ms', now, stamp, now, unpack(fields))
  redis.call('PEXPIRE', key, ttl)
  keep_gate(gate, ttl)
end

-- Whether id's record says it was cancelled while it waited (lua/cancel.lua): whoever meets the
-- message next drops it.
local function rec_cancelled(gate, id)
  return redis.call('HGET', rec_key(gate, id), 'state') == 'cancelled'
end

-- Whether id's record asks its handler to stop (cancelled while in-flight): not retried.
local function rec_cancel_asked(gate, id)
  return redis.call('HEXISTS', rec_key(gate, id), 'cancel_ms') == 1
end

-- The id and attempt of a message whose envelope says "track": true (nil otherwise): for the
-- raws a script finds itself (a claim, the mover). A plain search first, JSON only on a hit.
local function tracked_raw(raw)
  if not string.find(raw, '"track"', 1, true) then return nil end  -- plain: the cheap test
  if not string.find(raw, '"track"%s*:%s*true') then return nil end
  local ok, obj = pcall(cjson.decode, raw)
  if not ok or type(obj) ~= 'table' or obj['track'] ~= true then return nil end
  local id = obj['id']
  if type(id) ~= 'string' or id == '' or string.find(id, '\n', 1, true) then return nil end
  local attempt = obj['attempt']
  if type(attempt) ~= 'number' or attempt < 1 then attempt = 1 end
  return id, attempt
end
