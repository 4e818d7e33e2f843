-- Choose a miner for one job and reserve one of its slots, atomically.
--
-- KEYS[1] hash miner -> last pick sequence   KEYS[2] dispatch sequence
-- KEYS[3] the job's record key   KEYS[4] hash miner -> breaker state (tasks.breaker)
-- KEYS[5] hash miner -> in-flight count
-- KEYS[6] hash miner -> '<deadline ms>|<heartbeat JSON>' (<p>:beats, beat.lua)
-- KEYS[7] hash miner -> drained until (epoch ms, 0: until undrained; <p>:drained)
-- KEYS[8] hash miner -> index record (<p>:indexed)
-- KEYS[9 .. 8+n] the shared queue's lists, one per priority step (n = ARGV[11])
-- KEYS[9+n] (when ARGV[12] is '1') the job's affinity: the miner its session (or its
--         long system prompt) ran on last     ARGV[10] how long that is remembered (s)
-- then the index sets: <p>:idx, and <p>:idx:<model> for the job's model and for the
-- models of the miners the call may meet, as the caller knows them
-- ARGV[1] the job path's tag {<p>}              ARGV[2] model id ('' = any model)
-- ARGV[3] job record (JSON)       ARGV[4] job record TTL in seconds
-- ARGV[5] shared queue name       ARGV[6] miner queue prefix
-- ARGV[7] '1': skip the choice, the job goes to the shared queue (queue-based /chat)
-- ARGV[8] a miner id: only that miner may take the job (on its own queue even when
--         its slots are full); '' = any
-- ARGV[9] a miner id not to choose (a retry after that miner failed); '' = none
-- ARGV[13] the job's task message ('' = the caller publishes it after this call), with
--         ARGV[14] in place of its queue and ARGV[15] in place of the miner it holds a
--         slot of; ARGV[16] the priority step's suffix of the list it goes on. The
--         message is pushed, placeholders filled, on the list of the queue chosen, in
--         this call: one round trip for the choice and the publish. Every list it may
--         go on is declared: the shared queue's, and the miner queues' the caller knows
--         of; when the miner chosen is not among them, nothing is written and the answer
--         is {'!queue', that miner}: the caller calls again declaring its list too.
-- ARGV[17] (with a message) the legacy miners' wake list, declared among the keys;
--         ARGV[18] the job id; ARGV[19] how many wake tokens the list keeps. A job
--         published on the shared queue wakes one long-polling legacy miner in the same
--         call (with no poller waiting, the capped list only grows to its bound).
--
-- Every key it touches is declared (Redis Cluster; docs/scaling.md): per-miner state
-- is read from hashes, not from a key per miner. When the miner chosen would have it
-- write an index set the call did not declare (it scores the miner again in the sets
-- of all its models), it writes nothing and answers {'!sets', that miner's index
-- record}: the caller calls again with those sets too.
--
-- Among live miners (heartbeat not past its deadline) that serve the model (for a job
-- of any model: that hold one at all), are not drained (by their own heartbeat, or by
-- <p>:drained, which an operator or the anomaly detector sets) and have a free
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
-- Affinity: a job with an affinity key goes to the miner named there when that miner
-- may take it and has a free slot (its prefix cache holds the session's conversation so
-- far); otherwise it is chosen as any job. Either way that key then names where it went.
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
-- breaker open, the excluded one) are read on the way, and dead ones: they stay in the
-- index until the reap (web.fleet.registry) forgets them, within a second.

local prefix, model = ARGV[1], ARGV[2]
local shared_only = ARGV[7] == '1'
local target = ARGV[8] or ''
local exclude = ARGV[9] or ''
local INFLIGHT, BEATS, DRAINED, INDEXED = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local nshared = tonumber(ARGV[11])
local affine = ARGV[12] == '1' and KEYS[9 + nshared] or nil
local PAGE = 2  -- two real miners fill the first page: the same work as with no others
local message = ARGV[13] or ''

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function shared_waiting()
  for i = 9, 8 + nshared do
    if redis.call('LLEN', KEYS[i]) > 0 then return true end
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
  return tonumber(redis.call('HGET', INFLIGHT, id) or '0') or 0
end

-- Breakers: usually none, so one HGETALL.
local breakers = {}
local raw_breakers = redis.call('HGETALL', KEYS[4])
for i = 1, #raw_breakers, 2 do
  local ok, state = pcall(cjson.decode, raw_breakers[i + 1])
  if ok then breakers[raw_breakers[i]] = state end
end
-- 'closed', 'open' (skip) or 'trial' (may take one job, which makes it a trial)
local function breaker(id)
  local state = breakers[id]
  if not state then return 'closed' end
  if now < (tonumber(state['until']) or 0) then return 'open' end
  return 'trial'
end

-- A miner's heartbeat, if it has not expired (nil otherwise: dead).
local function live(id)
  local raw = redis.call('HGET', BEATS, id)
  if not raw then return nil end
  local deadline, body = string.match(raw, '^(%d+)|(.*)$')
  if not deadline or tonumber(deadline) <= now then return nil end
  return cjson.decode(body)
end

local function drained(id, hb)
  if hb.status == 'draining' then return true end
  local till = tonumber(redis.call('HGET', DRAINED, id) or '')
  return till ~= nil and (till == 0 or till > now)
end

-- A miner without a model takes no job: it would fail any it was given.
local function may_take(id, hb)
  return (tonumber(hb.slots) or 0) > 0 and type(hb.models) == 'table' and #hb.models > 0
    and id ~= exclude and breaker(id) ~= 'open' and not drained(id, hb)
end

local best, best_load, best_pick, best_used
local over, over_load, over_used  -- least loaded serving miner, even when full
local served = false
local open_served = false  -- a miner serving the model that is not drained
local index = model == '' and prefix .. ':idx' or prefix .. ':idx:' .. model
local stale = {}  -- live miners indexed under a model they no longer serve

-- One page of the index from rank `start`: how many members it had. Within the page
-- the loads are compared exactly (a score is the load in 1/4096 steps), so the
-- reading can stop after the first page that holds a miner that may take the job:
-- behind it, every miner is at least as loaded.
local function read_page(start)
  local page = redis.call('ZRANGE', index, start, start + PAGE - 1, 'WITHSCORES')
  for i = 1, #page, 2 do
    local id = page[i]
    local hb = live(id)
    if hb and not serves(hb) then  -- it changed models since it was indexed here
      stale[#stale + 1] = id
    elseif hb then
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
  return #page / 2
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
  local hb = live(target)
  if hb and hb.status ~= 'offline' and serves(hb) then
    if drained(target, hb) then return '!drained' end
    served, best, best_used = true, target, inflight(target)
  end
elseif model == '' and (shared_only or shared_waiting()) then
  -- to the shared queue, behind the jobs already waiting there
else
  if affine then affine_choice() end
  local start = 0
  while best == nil do
    local read = read_page(start)
    if read == 0 or over ~= nil or (shared_only and served) then break end
    start = start + read
  end
end

local refusal  -- the job is not taken: nothing is reserved or recorded for it
if (model ~= '' or target ~= '') and not served then
  refusal = '!unserved'
elseif model ~= '' and target == '' and not shared_only and not open_served then
  refusal = '!drained'
elseif best == nil and model ~= '' and over ~= nil then
  best, best_used = over, over_used
end
local indexed  -- the chosen miner's index record: it is scored again in its sets
if best and not refusal then
  indexed = redis.call('HGET', INDEXED, best)
  local _, _, models = idx_parse(indexed)
  if models and not idx_declared(prefix, models) then return {'!sets', indexed} end
end
local queue = best and (ARGV[6] .. best) or ARGV[5]
local list = prefix .. ':' .. queue .. (ARGV[16] or '')
if message ~= '' and not refusal then
  if not key_declared(list) then return {'!queue', best} end
  -- Each placeholder is once in the message (a random token): filled with the value as
  -- a JSON string holds it, before any write (a script that fails halfway keeps them).
  local function fill(text, token, value)
    local from, to = string.find(text, token, 1, true)
    if not from then return error('the task message has no placeholder ' .. token) end
    return string.sub(text, 1, from - 1) .. string.sub(cjson.encode(value), 2, -2)
      .. string.sub(text, to + 1)
  end
  message = fill(fill(message, ARGV[14], queue), ARGV[15], best or '')
end

-- The reading is done and every set it writes is declared: now the writes.
for _, id in ipairs(stale) do redis.call('ZREM', index, id) end
if refusal then return refusal end

local record = cjson.decode(ARGV[3])
if best and target == '' and breaker(best) == 'trial' then
  local state = breakers[best]
  state.state = 'trial'
  state['until'] = now + (tonumber(state.cooldown) or 5000)  -- one trial at a time
  redis.call('HSET', KEYS[4], best, cjson.encode(state))
end
if best then
  local used = 1
  if best_used <= 0 then
    redis.call('HSET', INFLIGHT, best, 1)
  else
    used = redis.call('HINCRBY', INFLIGHT, best, 1)
  end
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], best, seq)
  if indexed then idx_rescore(prefix, best, used, seq, indexed) end
  record.miner_id = best
  record.queue = ARGV[6] .. best
  if affine then redis.call('SET', affine, best, 'EX', tonumber(ARGV[10])) end
else
  record.queue = ARGV[5]
end
redis.call('SET', KEYS[3], cjson.encode(record), 'EX', tonumber(ARGV[4]))
if message ~= '' then
  redis.call('LPUSH', list, message)
  local wake = ARGV[17] or ''
  if not best and wake ~= '' then
    redis.call('LPUSH', wake, ARGV[18])
    redis.call('LTRIM', wake, 0, tonumber(ARGV[19]) - 1)
  end
end
return best or false
