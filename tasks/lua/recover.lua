-- Move one message of a dead (or restarted) miner to where dispatch chose, once.
--
-- KEYS[1] where the message is: kombu's unacked hash, or one of the miner's queue lists
-- KEYS[2] kombu's unacked index (zset)   KEYS[3] the destination list
-- KEYS[4] the miner's held hash
-- ARGV[1] 'tag': KEYS[1] is the unacked hash and ARGV[2] the delivery tag;
--         'list': KEYS[1] is a list and ARGV[2] the message as it lies there
-- ARGV[3] the message to push ('' = drop it: the job already ended)   ARGV[4] job id
--
-- The message moves only if it is still where the reaper saw it, so two passes (or a
-- miner acknowledging at the same moment) can never make two copies. It goes to the
-- consuming end of the destination list: a recovered job is served next.
-- Returns 1 if moved (or dropped), 0 if it was no longer there.
local found
if ARGV[1] == 'tag' then
  found = redis.call('HDEL', KEYS[1], ARGV[2]) == 1
  if found then redis.call('ZREM', KEYS[2], ARGV[2]) end
else
  found = redis.call('LREM', KEYS[1], 1, ARGV[2]) == 1
end
redis.call('HDEL', KEYS[4], ARGV[4])
if found and ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
if found then return 1 end
return 0
