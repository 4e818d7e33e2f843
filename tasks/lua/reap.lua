-- Forget miners whose heartbeat expired, announcing each once on the events channel,
-- and take them out of the dispatch index (index.lua).
--
-- KEYS[1] set of miner ids   KEYS[2] events channel   ARGV[1] key prefix
-- KEYS[3] miners by last heartbeat (zset)   ARGV[2] forget those last seen before this
-- (epoch seconds: GET /metrics/gpus lists a dead miner as offline until then)
-- Any number of web processes may run this at once: SREM decides who announces.
local gone = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':hb:' .. id) == 0 and redis.call('SREM', KEYS[1], id) == 1 then
    idx_forget(ARGV[1], id)
    redis.call('PUBLISH', KEYS[2], cjson.encode({
      type = 'state_update', change = 'gone', device_id = id, reason = 'heartbeat expired'}))
    gone = gone + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
return gone
