-- The dispatch index, shared by beat.lua, reserve.lua, release.lua and reap.lua
-- (tasks.lua puts this file in front of each of them).
--
-- <p>:idx             zset: every live miner that is not offline
-- <p>:idx:<model>     zset: the live miners that serve <model>
-- <p>:indexed         hash: miner -> 'slots|eligible|models JSON', what beat.lua indexed
--
-- Score = load bucket * 2^39 + the dispatch sequence of the miner's last pick, so the
-- first member is the least loaded and, among equally loaded ones, the one picked
-- longest ago: what reserve.lua used to find by reading every miner. The bucket is
-- floor(in-flight / slots * 4096) (exact order for any two loads of up to 64 slots),
-- capped at 8191; a draining miner, one without slots or one without a model scores
-- 16383, behind all others, and stays a member only so that dispatch knows its model
-- is served (or, in <p>:idx, that it is alive).
-- 16383 * 2^39 + (2^39 - 1) = 2^53 - 1: every score is an exact integer in a double.
-- The sequence wraps after 2^39 dispatches (17 years at 1,000 a second).
local IDX_PICK = 549755813888
local IDX_STEPS = 4096
local IDX_FULLEST = 8191
local IDX_INELIGIBLE = 16383

local function idx_score(used, slots, eligible, pick)
  local bucket = IDX_INELIGIBLE
  if eligible and slots > 0 then
    bucket = math.floor(math.max(used, 0) * IDX_STEPS / slots)
    if bucket > IDX_FULLEST then bucket = IDX_FULLEST end
  end
  return string.format('%.0f', bucket * IDX_PICK + (pick % IDX_PICK))
end

local function idx_record(slots, eligible, models)
  return tostring(slots) .. '|' .. (eligible and '1' or '0') .. '|' .. cjson.encode(models)
end

-- slots, eligible, models of a record (nil if there is none)
local function idx_parse(record)
  if not record then return nil end
  local slots, eligible, models = string.match(record, '^(%d+)|(%d)|(.*)$')
  if not slots then return nil end
  local ok, list = pcall(cjson.decode, models)
  if not ok or type(list) ~= 'table' then list = {} end
  return tonumber(slots), eligible == '1', list
end

local function idx_sets(prefix, models)
  local sets = {prefix .. ':idx'}
  for _, m in ipairs(models) do sets[#sets + 1] = prefix .. ':idx:' .. m end
  return sets
end

-- Whether every index set of these models is among the call's keys (the scripts that
-- keep the index, beat.lua, reserve.lua, release.lua and reap.lua, check this
-- before they write anything, and refuse with the miner's record otherwise: the caller
-- calls again with the sets that record names).
local idx_keys  -- the call's keys as a set, built on the first check
-- Whether the call declared `key`.
local function key_declared(key)
  if not idx_keys then
    idx_keys = {}
    for _, k in ipairs(KEYS) do idx_keys[k] = true end
  end
  return idx_keys[key] == true
end

local function idx_declared(prefix, models)
  for _, set in ipairs(idx_sets(prefix, models)) do
    if not key_declared(set) then return false end
  end
  return true
end

-- Take a miner out of every set it was indexed in (`record`: its index record, if
-- the caller read it already; else it is read here).
local function idx_forget(prefix, id, record)
  record = record or redis.call('HGET', prefix .. ':indexed', id)
  local _, _, models = idx_parse(record)
  for _, set in ipairs(idx_sets(prefix, models or {})) do redis.call('ZREM', set, id) end
  redis.call('HDEL', prefix .. ':indexed', id)
end

-- Score a miner again after its in-flight count or last pick changed (members only;
-- `record` as for idx_forget).
local function idx_rescore(prefix, id, used, pick, record)
  record = record or redis.call('HGET', prefix .. ':indexed', id)
  local slots, eligible, models = idx_parse(record)
  if not slots then return end
  local score = idx_score(used, slots, eligible, pick)
  for _, set in ipairs(idx_sets(prefix, models)) do redis.call('ZADD', set, 'XX', score, id) end
end

-- Index a miner as its heartbeat describes it; nothing to do when that did not change.
-- `current`: the miner's index record as it is (the caller read it already).
local function idx_update(prefix, id, hb, current)
  local slots = math.max(math.floor(tonumber(hb.slots) or 0), 0)
  local models = type(hb.models) == 'table' and hb.models or {}
  local eligible = hb.status ~= 'draining' and slots > 0 and #models > 0
  local record = idx_record(slots, eligible, models)
  local indexed = prefix .. ':indexed'
  if current == record then return end
  idx_forget(prefix, id, current or '')
  local used = tonumber(redis.call('HGET', prefix .. ':inflight', id) or '0') or 0
  local pick = tonumber(redis.call('HGET', prefix .. ':picks', id) or '0') or 0
  local score = idx_score(used, slots, eligible, pick)
  for _, set in ipairs(idx_sets(prefix, models)) do redis.call('ZADD', set, score, id) end
  redis.call('HSET', indexed, id, record)
end
