-- Record one heartbeat; keep the dispatch index (index.lua) up to date; announce on the
-- events channel when the device's state changed.
--
-- KEYS[1] the miner's heartbeat key   KEYS[2] set of miner ids   KEYS[3] events channel
-- KEYS[4] set of miners the reaper watches   KEYS[5] set of miners that restarted
-- KEYS[6] miners by last heartbeat (zset; GET /metrics/gpus lists the dead ones offline)
-- ARGV[1] miner id   ARGV[2] heartbeat JSON   ARGV[3] TTL (ms)   ARGV[4] '1' if offline
-- ARGV[5] key prefix   ARGV[6] when this heartbeat was received (epoch seconds)
-- With the miner's key to check (the heartbeat endpoint), also:
-- KEYS[7] the cached SHA-256 of the miner's key   KEYS[8] its "key never used" flag
-- ARGV[7] the SHA-256 of the key this heartbeat carries
--
-- The key check, the write and the confirmation are one step, so a revocation (which
-- rewrites the cache) lands wholly before or wholly after a heartbeat, never between
-- its check and its write. Nothing is written when the check fails: the answer is
-- '!uncached' (the caller asks the database, which fills the cache, then calls again),
-- '!revoked' or '!wrong'. Comparing digests in the clear gives away nothing that helps
-- to find a key.
--
-- A change is: the device appears, or its status, models or group differ from its last
-- heartbeat. Routine beats publish nothing and leave the index alone (one HGET shows
-- nothing changed). Returns 1 if an event was published.
-- A heartbeat whose boot id differs from the last one is a new process under the same
-- id: the reaper looks for jobs the old process held (web.fleet.recovery).
local id, prefix = ARGV[1], ARGV[5]

if KEYS[7] then
  local expected = redis.call('GET', KEYS[7])
  if not expected then return '!uncached' end
  if expected == '!revoked' then return '!revoked' end
  if expected ~= ARGV[7] then return '!wrong' end
  redis.call('DEL', KEYS[8])
end

local function decode(raw)
  if not raw then return nil end
  local ok, hb = pcall(cjson.decode, raw)
  if ok and type(hb) == 'table' then return hb end
  return {}
end

local function state(hb)
  return tostring(hb.status) .. '|' .. cjson.encode(hb.models or {}) .. '|' .. tostring(hb.group)
end

local function boot(hb)
  if type(hb.boot) ~= 'string' then return '' end
  return hb.boot
end

local previous = redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[6], ARGV[6], id)
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
  idx_forget(prefix, id)
  if redis.call('SREM', KEYS[2], id) == 1 or previous then
    redis.call('PUBLISH', KEYS[3], cjson.encode({
      type = 'state_update', change = 'gone', device_id = id, reason = 'offline'}))
    return 1
  end
  return 0
end
local hb, before = decode(ARGV[2]), decode(previous)
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[2], id)
redis.call('SADD', KEYS[4], id)
idx_update(prefix, id, hb)
if before and boot(before) ~= boot(hb) then
  redis.call('SADD', KEYS[5], id)
end
local change
if not before then
  change = 'appeared'
elseif state(before) ~= state(hb) then
  change = 'changed'
end
if change then
  redis.call('PUBLISH', KEYS[3], '{"type":"state_update","change":"' .. change ..
    '","device_id":' .. cjson.encode(id) .. ',"device":' .. ARGV[2] .. '}')
  return 1
end
return 0
