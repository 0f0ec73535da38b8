-- A queue's priority levels (producer/store/keys.py): a message of priority p (1 to 9, in its
-- envelope) waits in bus:{q}:pending:<p>, one of priority 0 (the default) in bus:{q}:pending.
-- A claim takes the highest non-empty level first, the oldest first within it.
--
-- bus:{q}:levels (the gate) exists while a level may hold a message: a queue without priorities
-- costs a push or a claim one EXISTS. Whatever puts a message on a level sets it; a claim that
-- finds every level empty drops it; the mover sets it again if it finds a level a producer
-- filled without it.
--
-- An idle worker waits on bus:{q}:pending alone (one BLMOVE or BRPOP). So a message of a
-- level that arrives while that list is empty is moved there at once ("the herald": the next
-- message a claim would take), which wakes such a worker. That list holds at most one message
-- of a level, always at its consuming end, where a claim looks for it (claim_order); anything
-- put in front of it first sends it back to the front of its own level (unherald).
local MAX_LEVEL = 9

local function level_key(pending, p)
  if p == 0 then return pending end
  return pending .. ':' .. p
end

-- The lists of the levels 1 to 9, highest first.
local function level_keys(pending)
  local out = {}
  for p = MAX_LEVEL, 1, -1 do out[#out + 1] = pending .. ':' .. p end
  return out
end

local function gate_key(pending)
  return string.sub(pending, 1, -8) .. 'levels'  -- bus:{q}:pending -> bus:{q}:levels
end

-- Whether a level may hold a message (the gate is set).
local function gated(pending)
  return redis.call('EXISTS', gate_key(pending)) == 1
end

local function set_gate(pending)
  redis.call('SET', gate_key(pending), '1')
end

-- The level of a message: its envelope's "priority" if that is an integer from 1 to 9 (as
-- producer/store/envelope.py reads it), else 0. A plain search first, JSON only on a hit.
local function level_of(raw)
  if not string.find(raw, '"priority"', 1, true) then return 0 end
  local ok, obj = pcall(cjson.decode, raw)
  if not ok or type(obj) ~= 'table' then return 0 end
  local p = obj['priority']
  if type(p) ~= 'number' or p < 1 or p > MAX_LEVEL or p ~= math.floor(p) then return 0 end
  -- written as an integer (5.0 is a float to the envelope's readers)
  if not string.find(raw, '"priority"%s*:%s*' .. p .. '%s*[,}]') then return 0 end
  return p
end

-- How many messages wait in the queue's pending lists, every level.
local function depth(pending)
  local n = redis.call('LLEN', pending)
  if not gated(pending) then return n end
  for _, key in ipairs(level_keys(pending)) do n = n + redis.call('LLEN', key) end
  return n
end

-- Each level's count, highest first ({level, count, ...}, levels that hold none left out);
-- the herald counts with its level.
local function depth_by_level(pending)
  local out, herald = {}, 0
  local n0 = redis.call('LLEN', pending)
  local tail = n0 > 0 and redis.call('LINDEX', pending, -1)
  if tail then herald = level_of(tail) end
  for p = MAX_LEVEL, 1, -1 do
    local n = redis.call('LLEN', pending .. ':' .. p)
    if p == herald then n = n + 1; n0 = n0 - 1 end
    if n > 0 then out[#out + 1] = p; out[#out + 1] = n end
  end
  if n0 > 0 then out[#out + 1] = 0; out[#out + 1] = n0 end
  return out
end

-- If pending is empty, the next message of the highest level that holds one moves there.
local function herald(pending)
  if redis.call('LLEN', pending) > 0 then return end
  for p = MAX_LEVEL, 1, -1 do
    if redis.call('LMOVE', pending .. ':' .. p, pending, 'RIGHT', 'LEFT') then return end
  end
end

-- A message of a level at pending's consuming end goes back to the front of its own level.
local function unherald(pending)
  local tail = redis.call('LINDEX', pending, -1)
  if not tail then return end
  local p = level_of(tail)
  if p > 0 then redis.call('LMOVE', pending, pending .. ':' .. p, 'RIGHT', 'RIGHT') end
end

-- raw into its level's list: at the back of the line (LPUSH), or at its front (RPUSH: a
-- message given back, taken next).
local function enqueue(pending, raw, front)
  local p = level_of(raw)
  if p == 0 then
    if front then
      unherald(pending)
      redis.call('RPUSH', pending, raw)
    else
      redis.call('LPUSH', pending, raw)
    end
    return
  end
  if front then
    unherald(pending)
    redis.call('RPUSH', pending .. ':' .. p, raw)
  else
    redis.call('LPUSH', pending .. ':' .. p, raw)
  end
  set_gate(pending)
  herald(pending)
end

-- The lists a claim takes from, in order, each with at most how many to take from it: the
-- levels highest first (the herald first within its own), then pending. {{key, cap}, ...}
local function claim_order(pending)
  if not gated(pending) then return {{pending, math.huge}} end
  local levels = level_keys(pending)
  if redis.call('EXISTS', unpack(levels)) == 0 then
    redis.call('DEL', gate_key(pending))
    return {{pending, math.huge}}
  end
  local tail = redis.call('LINDEX', pending, -1)
  local h = tail and level_of(tail) or 0
  local order = {}
  for i, key in ipairs(levels) do
    if MAX_LEVEL + 1 - i == h then order[#order + 1] = {pending, 1} end
    order[#order + 1] = {key, math.huge}
  end
  order[#order + 1] = {pending, math.huge}
  return order
end

-- The mover's look, every BUS_MOVER_INTERVAL_S: a level filled without the gate (a producer
-- that LPUSHed there itself) is seen, and a worker waiting on an empty bus:{q}:pending is woken
-- for a level's message.
local function find_levels(pending)
  if not gated(pending) then
    if redis.call('EXISTS', unpack(level_keys(pending))) == 0 then return end
    set_gate(pending)
  end
  herald(pending)
end
