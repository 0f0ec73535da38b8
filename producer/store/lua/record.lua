-- record: a worker's own write of a tracked message's state, outside a move: in-flight for a
-- message it took with a blocking pop (no script claimed it), and the at-most-once outcomes (no
-- script settles them); what waits for a message finished so is told (lib/after.lua, the
-- mover drains the outbox). Returns 1 if written (0: the queue keeps no records), -1 when an
-- in-flight is asked for a message cancelled while it waited (nothing written: drop it).
--
-- KEYS[1]  bus:{q}:tracking (the records' gate)
-- KEYS[2]  bus:{q}:msg:<id> (the record)
-- ARGV[1]  the id
-- ARGV[2]  the state
-- ARGV[3..] field, value pairs
--#include lib/now.lua
--#include lib/records.lua
--#include lib/after.lua

local ttl = gate_ttl(KEYS[1])
if not ttl then return 0 end
local fields = {}
for i = 3, #ARGV do fields[i - 2] = ARGV[i] end
if ARGV[2] == 'in-flight' then
  if rec_cancelled(KEYS[1], ARGV[1]) then return -1 end
  redis.call('HDEL', KEYS[2], 'progress', 'progress_text', 'progress_ms')
end
rec_write(KEYS[1], ttl, ARGV[1], ARGV[2], now_ms(), fields)
if ARGV[2] == 'handled' or ARGV[2] == 'dead' then  -- at-most-once: its waiters are told
  tell(KEYS[1], ARGV[1], ARGV[2], redis.call('HGET', KEYS[2], 'reason') or '')
end
return 1
