-- Take the next job off the shared Celery queue and lease it to a legacy miner.
--
-- KEYS[1..4] the shared queue's kombu lists, highest priority first
-- KEYS[5]    zset of leased job ids by deadline   KEYS[6] dead-letter list
-- KEYS[7]    the miner's drain key (a drained miner is leased nothing)
-- ARGV[1] key prefix   ARGV[2] miner id   ARGV[3] lease id   ARGV[4] now
-- ARGV[5] deadline     ARGV[6] TTL of the lease and attempt records (s)
--
-- The job moves from the queue into its lease record in one step, so it is always
-- somewhere: queued, leased, or (once submitted) done. The lease keeps the raw kombu
-- message and which list it came from, so an expired lease can put it back as it
-- was. Returns {job id, raw message, attempt}, false when the queue is empty, or
-- {'', raw, 0} for a message that is not a Celery task (moved to the dead letters),
-- '!drained' when the miner is drained (nothing is taken).
if KEYS[7] and redis.call('EXISTS', KEYS[7]) == 1 then return '!drained' end
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

local prefix = ARGV[1]
local attempts_key = prefix .. ':attempts:' .. job_id
local attempts = redis.call('INCR', attempts_key)
redis.call('EXPIRE', attempts_key, ARGV[6])
local lease = prefix .. ':lease:' .. job_id
redis.call('HSET', lease, 'miner', ARGV[2], 'lease_id', ARGV[3], 'leased_at', ARGV[4],
  'deadline', ARGV[5], 'attempts', attempts, 'list', list, 'message', raw)
redis.call('EXPIRE', lease, ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[5], job_id)
return {job_id, raw, attempts}
