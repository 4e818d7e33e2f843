-- Take the next job off the shared Celery queue and lease it to a legacy miner.
--
-- KEYS[1..4] the shared queue's kombu lists, highest priority first
-- KEYS[5]    zset of leased job ids by deadline   KEYS[6] dead-letter list
-- KEYS[7]    the miner's drain key (a drained miner is leased nothing)
-- KEYS[6 + 2i], KEYS[7 + 2i] the lease and the attempt count of the i-th job in ARGV
-- ARGV[1] miner id   ARGV[2] lease id   ARGV[3] now   ARGV[4] deadline
-- ARGV[5] TTL of the lease and attempt records (s)
-- ARGV[6 ..] the ids of the jobs at the lists' heads as the caller saw them
-- (web.fleet.leases, which declares their keys)
--
-- The job moves from the queue into its lease record in one step, so it is always
-- somewhere: queued, leased, or (once submitted) done. The lease keeps the raw kombu
-- message and which list it came from, so an expired lease can put it back as it
-- was. Returns {job id, raw message, attempt}, false when the queue is empty, or
-- {'', raw, 0} for a message that is not a Celery task (moved to the dead letters),
-- '!drained' when the miner is drained (nothing is taken), or '!again' when the job
-- at the head is not one the caller named (another took those first): it goes back
-- where it was, and the caller looks again.
if redis.call('EXISTS', KEYS[7]) == 1 then return '!drained' end
local raw, list
for i = 1, 4 do
  raw = redis.call('RPOP', KEYS[i])
  if raw then list = i break end
end
if not raw then return false end

local ok, message = pcall(cjson.decode, raw)
local job_id = ok and type(message) == 'table' and type(message.headers) == 'table'
  and message.headers.id
if type(job_id) ~= 'string' then
  redis.call('LPUSH', KEYS[6], raw)
  return {'', raw, 0}
end

local named
for i = 1, #ARGV - 5 do
  if ARGV[5 + i] == job_id then named = i break end
end
if not named then
  redis.call('RPUSH', KEYS[list], raw)
  return '!again'
end
local lease, attempts_key = KEYS[6 + 2 * named], KEYS[7 + 2 * named]
local attempts = redis.call('INCR', attempts_key)
redis.call('EXPIRE', attempts_key, ARGV[5])
redis.call('HSET', lease, 'miner', ARGV[1], 'lease_id', ARGV[2], 'leased_at', ARGV[3],
  'deadline', ARGV[4], 'attempts', attempts, 'list', list, 'message', raw)
redis.call('EXPIRE', lease, ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[4], job_id)
return {job_id, raw, attempts}
