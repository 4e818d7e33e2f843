-- Choose a miner for one job and reserve one of its slots, atomically.
--
-- KEYS[1] set of miner ids        KEYS[2] hash miner -> last pick sequence
-- KEYS[3] dispatch sequence       KEYS[4] the job's record key
-- KEYS[5] hash miner -> circuit breaker state (tasks.breaker)
-- ARGV[1] key prefix              ARGV[2] model id ('' = any model)
-- ARGV[3] job record (JSON)       ARGV[4] job record TTL in seconds
-- ARGV[5] shared queue name       ARGV[6] miner queue prefix
-- ARGV[7] '1': skip the choice, the job goes to the shared queue (queue-based /chat)
-- ARGV[8] a miner id: only that miner may take the job (on its own queue even when
--         its slots are full); '' = any
-- ARGV[9] a miner id not to choose (a retry after that miner failed); '' = none
--
-- Among live miners (heartbeat key present) that serve the model, are not draining
-- (by their own heartbeat, or by the anomaly detector's <p>:drain:<miner> key)
-- and have a free slot, take the least loaded (in-flight / slots); on a tie, the one
-- picked longest ago, so sequential requests rotate over idle miners. Ids whose
-- heartbeat expired are dropped from the set on the way. Returns the miner id, or
-- false when the job must go to the shared queue (either way the job record says
-- where), or '!unserved' when a model was asked for that no live miner serves
-- (nothing is written then: the caller refuses the job). A job for a named model
-- never waits on shared, where any miner (or a legacy one) might take it: when every
-- miner serving it is full, it queues on the least loaded one's own queue.
-- A miner whose breaker is open is skipped until its cool-down ends; then it gets one
-- trial job at a time (half-open) until that job's outcome closes or reopens it.

local prefix, model = ARGV[1], ARGV[2]

local function serves(hb)
  if model == '' then return true end
  for _, m in ipairs(hb.models or {}) do
    if m == model then return true end
  end
  return false
end

local shared_only = ARGV[7] == '1'
local target = ARGV[8] or ''
local exclude = ARGV[9] or ''

-- Breakers: usually none, so one HGETALL and no clock read.
local breakers, now = {}, 0
local raw_breakers = redis.call('HGETALL', KEYS[5])
if #raw_breakers > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 1, #raw_breakers, 2 do
    local ok, state = pcall(cjson.decode, raw_breakers[i + 1])
    if ok then breakers[raw_breakers[i]] = state end
  end
end
-- 'closed', 'open' (skip) or 'trial' (may take one job, which makes it a trial)
local function breaker(id)
  local state = breakers[id]
  if not state then return 'closed' end
  if now < (tonumber(state['until']) or 0) then return 'open' end
  return 'trial'
end
local best, best_load, best_pick, best_used
local over, over_load, over_used  -- least loaded serving miner, even when full
local served = false
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', prefix .. ':hb:' .. id)
  if not raw then
    if redis.call('SREM', KEYS[1], id) == 1 then
      redis.call('PUBLISH', prefix .. ':events', cjson.encode({
        type = 'state_update', change = 'gone', device_id = id, reason = 'heartbeat expired'}))
    end
  else
    local hb = cjson.decode(raw)
    local slots = tonumber(hb.slots) or 0
    if target ~= '' and id ~= target then
      -- not a candidate
    elseif target ~= '' then
      if hb.status ~= 'offline' and serves(hb) then
        served = true
        best = id
        best_used = tonumber(redis.call('GET', prefix .. ':inflight:' .. id) or '0')
      end
    elseif hb.status ~= 'offline' and serves(hb) then served = true end
    local drained = redis.call('EXISTS', prefix .. ':drain:' .. id) == 1
    if target == '' and not shared_only and hb.status ~= 'draining' and not drained
        and hb.status ~= 'offline' and slots > 0 and serves(hb) and id ~= exclude
        and breaker(id) ~= 'open' then
      local used = tonumber(redis.call('GET', prefix .. ':inflight:' .. id) or '0')
      if used < 0 then used = 0 end
      if over == nil or used / slots < over_load then
        over, over_load, over_used = id, used / slots, used
      end
      if used < slots then
        local load = used / slots
        local pick = tonumber(redis.call('HGET', KEYS[2], id) or '0')
        if best == nil or load < best_load or (load == best_load and pick < best_pick) then
          best, best_load, best_pick, best_used = id, load, pick, used
        end
      end
    end
  end
end

if (model ~= '' or target ~= '') and not served then return '!unserved' end
if best == nil and model ~= '' and over ~= nil then
  best, best_used = over, over_used
end

local record = cjson.decode(ARGV[3])
if best and target == '' and breaker(best) == 'trial' then
  local state = breakers[best]
  state.state = 'trial'
  state['until'] = now + (tonumber(state.cooldown) or 5000)  -- one trial at a time
  redis.call('HSET', KEYS[5], best, cjson.encode(state))
end
if best then
  if best_used <= 0 then
    redis.call('SET', prefix .. ':inflight:' .. best, 1)
  else
    redis.call('INCR', prefix .. ':inflight:' .. best)
  end
  redis.call('HSET', KEYS[2], best, redis.call('INCR', KEYS[3]))
  record.miner_id = best
  record.queue = ARGV[6] .. best
else
  record.queue = ARGV[5]
end
redis.call('SET', KEYS[4], cjson.encode(record), 'EX', tonumber(ARGV[4]))
return best or false
