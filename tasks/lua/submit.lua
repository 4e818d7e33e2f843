-- A legacy miner hands in a job's result: accepted only from the lease holder.
--
-- KEYS[1] the job's lease   KEYS[2] zset of leases   KEYS[3] the result key
-- KEYS[4] the job's record
-- ARGV[1] job id   ARGV[2] miner id   ARGV[3] lease id ('' = whichever lease the miner holds)
-- ARGV[4] the encoded Celery meta ('' = only say whether the miner holds the lease)
-- ARGV[5] result TTL (s)   ARGV[6] the waiting web process's channel ('' = the result key's)
--
-- Returns 'stored', or why not: 'not_holder' (leased to another miner, or re-leased
-- since), 'duplicate' (a result is already stored: the first one wins), 'not_leased'
-- (the job exists but is not leased), 'unknown'; with no meta, 'holder' when the
-- miner holds the lease. Nothing changes unless 'stored'.
local function final_result_exists()
  local current = redis.call('GET', KEYS[3])
  if not current then return false end
  local ok, meta = pcall(cjson.decode, current)
  return ok and (meta.status == 'SUCCESS' or meta.status == 'FAILURE')
end

local holder = redis.call('HMGET', KEYS[1], 'miner', 'lease_id')
if not holder[1] then
  if final_result_exists() then return 'duplicate' end
  if redis.call('EXISTS', KEYS[4]) == 1 then return 'not_leased' end
  return 'unknown'
end
if holder[1] ~= ARGV[2] or (ARGV[3] ~= '' and holder[2] ~= ARGV[3]) then
  return 'not_holder'
end
if ARGV[4] == '' then return 'holder' end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if final_result_exists() then return 'duplicate' end
redis.call('SET', KEYS[3], ARGV[4], 'EX', tonumber(ARGV[5]))
local channel = ARGV[6]
if not channel or channel == '' then channel = KEYS[3] end
redis.call('PUBLISH', channel, ARGV[4])
return 'stored'
