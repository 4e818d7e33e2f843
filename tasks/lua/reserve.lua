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
-- KEYS[6] (optional) the job's affinity: the miner its session (or its long system
--         prompt) ran on last     ARGV[10] how long that is remembered, in seconds
--
-- Among live miners (heartbeat key present) that serve the model (for a job of any
-- model: that hold one at all), are not drained (by their own heartbeat, or by the
-- <p>:drain:<miner> key an operator or the anomaly detector sets) and have a free
-- slot, take the least loaded (in-flight / slots); on a tie, the one picked longest
-- ago, so sequential requests rotate over idle miners. Returns the miner id, or false
-- when the job must go to the shared queue (either way the job record says where),
-- '!unserved' when a model was asked for that no live miner serves, or '!drained' when
-- every live miner serving it (or the target device) is drained (nothing is written
-- for either: the caller refuses the job). A job for a named model never waits on
-- shared, where any miner (or a legacy one) might take it: when every miner serving it
-- is full, it queues on the least loaded one's own queue.
-- A miner whose breaker is open is skipped until its cool-down ends; then it gets one
-- trial job at a time (half-open) until that job's outcome closes or reopens it.
--
-- Affinity: a job with KEYS[6] goes to the miner named there when that miner may take
-- it and has a free slot (its prefix cache holds the session's conversation so far);
-- otherwise it is chosen as any job. Either way KEYS[6] then names where it went.
--
-- First come, first served: while jobs for any model wait on the shared queue (every
-- miner was full when they came), a new job for any model queues behind them there
-- instead of taking a slot that just came free; otherwise, under a steady overload,
-- newer jobs would keep taking the freed slots and the waiting ones would starve
-- (miners drain their own queue before shared).
--
-- The miners are read in the index's order (index.lua: least loaded, then picked
-- longest ago), a page at a time, and the reading stops after the first page that
-- holds a miner that may take the job: a dispatch costs the same with 2 or 2,000
-- miners. Only miners in the index's front that may not take jobs (drained by key,
-- breaker open, the excluded one) are read on the way. Ids whose heartbeat expired
-- are dropped from the index and the set of miners as they are met.

local prefix, model = ARGV[1], ARGV[2]
local shared_only = ARGV[7] == '1'
local target = ARGV[8] or ''
local exclude = ARGV[9] or ''
local PAGE = 2  -- two real miners fill the first page: the same work as with no others
-- kombu's Redis transport keeps one list per priority step: the name, then name..'\6\022'..step
local PRIORITY_STEPS = {'', '\6\0223', '\6\0226', '\6\0229'}

local function shared_waiting()
  for _, step in ipairs(PRIORITY_STEPS) do
    if redis.call('LLEN', ARGV[5] .. step) > 0 then return true end
  end
  return false
end

local function serves(hb)
  if model == '' then return true end
  for _, m in ipairs(hb.models or {}) do
    if m == model then return true end
  end
  return false
end

local function inflight(id)
  return tonumber(redis.call('GET', prefix .. ':inflight:' .. id) or '0') or 0
end

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

-- The live heartbeat of an indexed miner; a dead one leaves the index (nil).
local function live(id)
  local raw = redis.call('GET', prefix .. ':hb:' .. id)
  if raw then return cjson.decode(raw) end
  idx_forget(prefix, id)
  if redis.call('SREM', KEYS[1], id) == 1 then
    redis.call('PUBLISH', prefix .. ':events', cjson.encode({
      type = 'state_update', change = 'gone', device_id = id, reason = 'heartbeat expired'}))
  end
  return nil
end

local function drained(id, hb)
  return hb.status == 'draining' or redis.call('EXISTS', prefix .. ':drain:' .. id) == 1
end

-- A miner without a model takes no job: it would fail any it was given.
local function may_take(id, hb)
  return (tonumber(hb.slots) or 0) > 0 and type(hb.models) == 'table' and #hb.models > 0
    and id ~= exclude and breaker(id) ~= 'open' and not drained(id, hb)
end

local best, best_load, best_pick, best_used
local affine = KEYS[6]
local over, over_load, over_used  -- least loaded serving miner, even when full
local served = false
local open_served = false  -- a miner serving the model that is not drained

-- One page of the index from rank `start`: how many members it had and how many of
-- them left the index. Within the page the loads are compared exactly (a score is
-- the load in 1/4096 steps), so the reading can stop after the first page that holds a
-- miner that may take the job: behind it, every miner is at least as loaded.
local function read_page(index, start)
  local page = redis.call('ZRANGE', index, start, start + PAGE - 1, 'WITHSCORES')
  local left = 0
  for i = 1, #page, 2 do
    local id = page[i]
    local hb = live(id)
    if not hb then
      left = left + 1
    elseif not serves(hb) then  -- it changed models since it was indexed here
      redis.call('ZREM', index, id)
      left = left + 1
    else
      served = true
      local takes = not shared_only and may_take(id, hb)
      if takes or not (open_served or shared_only or drained(id, hb)) then
        open_served = true
      end
      if takes then
        local slots, used = tonumber(hb.slots), math.max(inflight(id), 0)
        local load, pick = used / slots, tonumber(page[i + 1]) % IDX_PICK
        if over == nil or load < over_load then
          over, over_load, over_used = id, load, used
        end
        if used < slots and (best == nil or load < best_load
            or (load == best_load and pick < best_pick)) then
          best, best_load, best_pick, best_used = id, load, pick, used
        end
      end
    end
  end
  return #page / 2, left
end

-- The miner the job's session ran on last, if it may take the job and has a free slot.
local function affine_choice()
  local last = redis.call('GET', affine)
  if not last or last == exclude then return end
  local hb = live(last)
  if hb and hb.status ~= 'offline' and serves(hb) and may_take(last, hb) then
    local used = math.max(inflight(last), 0)
    if used < (tonumber(hb.slots) or 0) then
      served, open_served, best, best_used = true, true, last, used
    end
  end
end

if target ~= '' then
  local raw = redis.call('GET', prefix .. ':hb:' .. target)
  local hb = raw and cjson.decode(raw)
  if hb and hb.status ~= 'offline' and serves(hb) then
    if drained(target, hb) then return '!drained' end
    served, best, best_used = true, target, inflight(target)
  end
elseif model == '' and (shared_only or shared_waiting()) then
  -- to the shared queue, behind the jobs already waiting there
else
  if affine then affine_choice() end
  local index = model == '' and prefix .. ':idx' or prefix .. ':idx:' .. model
  local start = 0
  while best == nil do
    local read, left = read_page(index, start)
    if read == 0 or over ~= nil or (shared_only and served) then break end
    start = start + read - left
  end
end

if (model ~= '' or target ~= '') and not served then return '!unserved' end
if model ~= '' and target == '' and not shared_only and not open_served then
  return '!drained'
end
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
  local used = 1
  if best_used <= 0 then
    redis.call('SET', prefix .. ':inflight:' .. best, 1)
  else
    used = redis.call('INCR', prefix .. ':inflight:' .. best)
  end
  local seq = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[2], best, seq)
  idx_rescore(prefix, best, used, seq)
  record.miner_id = best
  record.queue = ARGV[6] .. best
  if affine then redis.call('SET', affine, best, 'EX', tonumber(ARGV[10])) end
else
  record.queue = ARGV[5]
end
redis.call('SET', KEYS[4], cjson.encode(record), 'EX', tonumber(ARGV[4]))
return best or false
