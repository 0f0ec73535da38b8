-- ack_lrem: the drain reference's ack: each message of a batch LREMed from the processing list.
-- Returns how many were given.
--
-- KEYS[1]  the processing list
-- ARGV     the messages

for i = 1, #ARGV do redis.call('LREM', KEYS[1], -1, ARGV[i]) end
return #ARGV
