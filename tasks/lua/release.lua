-- Give back one reserved slot of a miner; never below zero.
-- KEYS[1] the miner's in-flight counter. Returns the new count.
local n = redis.call('DECR', KEYS[1])
if n < 0 then
  redis.call('SET', KEYS[1], 0)
  return 0
end
return n
