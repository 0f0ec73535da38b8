-- Messages that wait for others (producer/store/after.py). When a tracked message that others
-- wait for is finished (handled, dead or cancelled), the script that finishes it writes, in the
-- same step, one entry per waiting message into its queue's outbox; a worker of that queue
-- then tells each waiting message (lua/resolve.lua: on a cluster it may live on another
-- node). The keys are derived from the queue's records' gate (bus:{q}:tracking): one slot.

local told = 0  -- outbox entries this script call wrote: the script's callers drain them

local function base_key(gate) return string.sub(gate, 1, -9) end  -- 'bus:{q}:'

-- id (of the queue of gate) finished in state with reason: an outbox entry for each message
-- that waits for it (bus:{q}:then:<id>), which is then forgotten.
local function tell(gate, id, state, reason)
  local base = base_key(gate)
  local waiters = base .. 'then:' .. id
  if redis.call('EXISTS', waiters) == 0 then return end
  local q = string.match(gate, '{(.*)}')
  local tail = '\n' .. q .. '\n' .. id .. '\n' .. state .. '\n' .. (reason or '')
  local members = redis.call('SMEMBERS', waiters)
  for i = 1, #members do
    redis.call('LPUSH', base .. 'outbox', members[i] .. tail)
  end
  redis.call('DEL', waiters)
  told = told + #members
end
