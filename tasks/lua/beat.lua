-- Record one heartbeat; keep the dispatch index (index.lua) up to date; announce on the
-- events channel when the device's state changed.
--
-- KEYS[1] the miner's heartbeat key   KEYS[2] set of miner ids
-- KEYS[3] set of miners the reaper watches   KEYS[4] set of miners that restarted
-- KEYS[5] miners by last heartbeat (zset; GET /metrics/gpus lists the dead ones offline)
-- KEYS[6] hash miner -> index record   KEYS[7] hash miner -> in-flight count
-- KEYS[8] hash miner -> last pick sequence
-- KEYS[9] hash miner -> '<deadline ms>|<heartbeat JSON>': dispatch's copy of the
-- heartbeat keys (reserve.lua reads it, so that its keys are declared ones)
-- KEYS[10], KEYS[11] with a key to check (ARGV[7] not ''): the cached SHA-256 of the
-- miner's key and its "key never used" flag
-- then the index sets: <p>:idx, and <p>:idx:<model> for the models of this heartbeat
-- and of the miner's index record as the caller knows it
-- ARGV[1] miner id   ARGV[2] heartbeat JSON   ARGV[3] TTL (ms)   ARGV[4] '1' if offline
-- ARGV[5] the job path's tag {<p>}   ARGV[6] when this heartbeat was received (epoch seconds)
-- ARGV[7] the SHA-256 of the key this heartbeat carries ('': no check)
-- ARGV[8] the events channel
--
-- The key check, the write and the confirmation are one step, so a revocation (which
-- rewrites the cache) lands wholly before or wholly after a heartbeat, never between
-- its check and its write. Nothing is written when the check fails: the answer is
-- '!uncached' (the caller asks the database, which fills the cache, then calls again),
-- '!revoked' or '!wrong'. Comparing digests in the clear gives away nothing that helps
-- to find a key. Nothing is written either when an index set this beat would touch is
-- not among the keys: the answer is {'!sets', the miner's index record}.
--
-- A change is: the device appears, or its status, models or group differ from its last
-- heartbeat. Routine beats publish nothing and leave the index alone (one HGET shows
-- nothing changed). Returns 1 if an event was published.
-- A heartbeat whose boot id differs from the last one is a new process under the same
-- id: the reaper looks for jobs the old process held (web.fleet.recovery).
local id, prefix = ARGV[1], ARGV[5]

local events = ARGV[8]

if ARGV[7] ~= '' then
  local expected = redis.call('GET', KEYS[10])
  if not expected then return '!uncached' end
  if expected == '!revoked' then return '!revoked' end
  if expected ~= ARGV[7] then return '!wrong' end
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

local hb = ARGV[4] ~= '1' and decode(ARGV[2])
local record = redis.call('HGET', KEYS[6], id)
local _, _, indexed_models = idx_parse(record)
if not idx_declared(prefix, indexed_models or {})
    or (hb and type(hb.models) == 'table' and not idx_declared(prefix, hb.models)) then
  return {'!sets', record or ''}
end
if ARGV[7] ~= '' then redis.call('DEL', KEYS[11]) end

local previous = redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[5], ARGV[6], id)
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[9], id)
  idx_forget(prefix, id, record or '')
  if redis.call('SREM', KEYS[2], id) == 1 or previous then
    redis.call('PUBLISH', events, cjson.encode({
      type = 'state_update', change = 'gone', device_id = id, reason = 'offline'}))
    return 1
  end
  return 0
end
local before = decode(previous)
local ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('HSET', KEYS[9], id, string.format('%.0f', deadline) .. '|' .. ARGV[2])
redis.call('SADD', KEYS[2], id)
redis.call('SADD', KEYS[3], id)
idx_update(prefix, id, hb, record)
if before and boot(before) ~= boot(hb) then
  redis.call('SADD', KEYS[4], id)
end
local change
if not before then
  change = 'appeared'
elseif state(before) ~= state(hb) then
  change = 'changed'
end
if change then
  redis.call('PUBLISH', events, '{"type":"state_update","change":"' .. change ..
    '","device_id":' .. cjson.encode(id) .. ',"device":' .. ARGV[2] .. '}')
  return 1
end
return 0
