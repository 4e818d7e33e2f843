-- Give back one reserved slot of a miner; never below zero. The miner moves up in the
-- dispatch index (index.lua) to where its new load puts it.
-- KEYS[1] hash miner -> in-flight count   KEYS[2] hash miner -> last pick sequence
-- KEYS[3] hash miner -> index record (<p>:indexed)
-- then the index sets of the models of the miner's record, as the caller knows it
-- ARGV[1] the job path's tag {<p>}   ARGV[2] miner id
-- Returns the new count, or {'!sets', the miner's index record} without writing
-- anything when one of its sets is not among the keys (the caller calls again).
local id = ARGV[2]
local record = redis.call('HGET', KEYS[3], id)
local _, _, models = idx_parse(record)
if models and not idx_declared(ARGV[1], models) then
  return {'!sets', record}
end
local n = redis.call('HINCRBY', KEYS[1], id, -1)
if n < 0 then
  redis.call('HSET', KEYS[1], id, 0)
  n = 0
end
local pick = tonumber(redis.call('HGET', KEYS[2], id) or '0') or 0
if record then idx_rescore(ARGV[1], id, n, pick, record) end
return n
