-- A miner's job is done once its result is stored: forget that this process holds it
-- and remove kombu's unacked entry (the acknowledgement acks_late makes after the
-- result). Sent in the round trip that stores the result (miners.bookkeeping), after
-- the store; it checks that the store happened, so that a store that did not run
-- (Redis lost its scripts) leaves both for the reaper until the result is in.
--
-- KEYS[1] the result key   KEYS[2] the miner's held hash   KEYS[3] kombu's unacked index
-- KEYS[4] kombu's unacked hash
-- ARGV[1] job id   ARGV[2] kombu's delivery tag ('' if not known)
-- Returns 1 if settled, 0 if there is no result yet.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
end
return 1
