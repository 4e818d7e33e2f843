-- Record one job outcome of a miner in its circuit breaker.
--
-- KEYS[1] hash miner -> breaker state   KEYS[2] hash miner -> failures in a row
-- ARGV[1] miner id   ARGV[2] '1' the job succeeded, '0' it failed or timed out
-- ARGV[3] failures in a row that open the breaker   ARGV[4] first cool-down (ms)
-- ARGV[5] longest cool-down (ms)   ARGV[6] the events channel (a channel, not a key)
--
-- closed --N failures in a row--> open (dispatch skips it) --cool-down over--> the next
-- job it gets is a trial (reserve.lua) --success--> closed; --failure--> open again
-- with twice the cool-down. Failures of jobs sent before it opened change nothing.
-- Returns 'opened', 'closed' or ''.
local id = ARGV[1]
local raw = redis.call('HGET', KEYS[1], id)
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[2], id)
  if raw then
    redis.call('HDEL', KEYS[1], id)
    redis.call('PUBLISH', ARGV[6], cjson.encode({
      type = 'breaker', device_id = id, state = 'closed'}))
    return 'closed'
  end
  return ''
end
local streak = redis.call('HINCRBY', KEYS[2], id, 1)
local state = raw and cjson.decode(raw)
local cooldown
if state and state.state == 'trial' then
  cooldown = math.min((tonumber(state.cooldown) or tonumber(ARGV[4])) * 2, tonumber(ARGV[5]))
elseif not state and streak >= tonumber(ARGV[3]) then
  cooldown = tonumber(ARGV[4])
else
  return ''
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], id, cjson.encode({
  state = 'open', ['until'] = now + cooldown, cooldown = cooldown, failures = streak}))
redis.call('PUBLISH', ARGV[6], cjson.encode({
  type = 'breaker', device_id = id, state = 'open', cooldown_ms = cooldown, failures = streak}))
return 'opened'
