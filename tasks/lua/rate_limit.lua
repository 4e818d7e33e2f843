-- Take one token from a client's token bucket (the MQTT gateway's per-client limit).
--
-- KEYS[1] hash of the client's bucket: tokens (a float), ts (ms of the last update)
-- ARGV[1] bucket size (burst)   ARGV[2] tokens added per second
--
-- A bucket starts full and refills continuously up to its size; the key expires once
-- it would be full again, so an idle client costs nothing. Time is Redis's own clock,
-- so every gateway replica counts the same way.
-- Returns {1, whole tokens left} when a token was taken, {0, ms until one is there} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local size = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or size
local since = math.max(0, now - (tonumber(state[2]) or now))
tokens = math.min(size, tokens + since * per_ms)
local taken = tokens >= 1
if taken then
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((size - tokens) / per_ms) + 1000)
if taken then
  return {1, math.floor(tokens)}
end
return {0, math.ceil((1 - tokens) / per_ms)}
