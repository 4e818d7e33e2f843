-- Give back one reserved slot of a miner; never below zero. The miner moves up in the
-- dispatch index (index.lua) to where its new load puts it.
-- KEYS[1] the miner's in-flight counter   KEYS[2] hash miner -> last pick sequence
-- ARGV[1] key prefix   ARGV[2] miner id
-- Returns the new count.
local n = redis.call('DECR', KEYS[1])
if n < 0 then
  redis.call('SET', KEYS[1], 0)
  n = 0
end
local pick = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') or 0
idx_rescore(ARGV[1], ARGV[2], n, pick)
return n
