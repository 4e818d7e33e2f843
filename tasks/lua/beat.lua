-- Record one heartbeat; announce on the events channel when the device's state changed.
--
-- KEYS[1] the miner's heartbeat key   KEYS[2] set of miner ids   KEYS[3] events channel
-- KEYS[4] set of miners the reaper watches   KEYS[5] set of miners that restarted
-- ARGV[1] miner id   ARGV[2] heartbeat JSON   ARGV[3] TTL (ms)   ARGV[4] '1' if offline
--
-- A change is: the device appears, or its status, models or group differ from its last
-- heartbeat. Routine beats publish nothing. Returns 1 if an event was published.
-- A heartbeat whose boot id differs from the last one is a new process under the same
-- id: the reaper looks for jobs the old process held (tasks.recovery).
local function state(raw)
  local ok, hb = pcall(cjson.decode, raw)
  if not ok then return '' end
  return tostring(hb.status) .. '|' .. cjson.encode(hb.models or {}) .. '|' .. tostring(hb.group)
end

local function boot(raw)
  local ok, hb = pcall(cjson.decode, raw)
  if not ok or type(hb.boot) ~= 'string' then return '' end
  return hb.boot
end

local previous = redis.call('GET', KEYS[1])
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
  if redis.call('SREM', KEYS[2], ARGV[1]) == 1 or previous then
    redis.call('PUBLISH', KEYS[3], cjson.encode({
      type = 'state_update', change = 'gone', device_id = ARGV[1], reason = 'offline'}))
    return 1
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
if previous and boot(previous) ~= boot(ARGV[2]) then
  redis.call('SADD', KEYS[5], ARGV[1])
end
local change
if not previous then
  change = 'appeared'
elseif state(previous) ~= state(ARGV[2]) then
  change = 'changed'
end
if change then
  redis.call('PUBLISH', KEYS[3], '{"type":"state_update","change":"' .. change ..
    '","device_id":' .. cjson.encode(ARGV[1]) .. ',"device":' .. ARGV[2] .. '}')
  return 1
end
return 0
