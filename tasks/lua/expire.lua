-- Put jobs whose lease expired back on the shared queue, or fail them for good.
--
-- KEYS[1] zset of leased job ids by deadline   KEYS[2..5] the shared queue's kombu
-- lists, highest priority first                KEYS[6] the wake list of long-polls
-- ARGV[1] key prefix   ARGV[2] now   ARGV[3] max attempts   ARGV[4] result TTL (s)
-- ARGV[5] date_done (ISO 8601)      ARGV[6] most leases to handle in one call
--
-- The job goes back to the end of the list it was taken from, so it is the next one
-- served at its priority. A job leased MIA_MAX_ATTEMPTS times without a result ends
-- with a FAILURE result in Celery's format naming it, instead of circling forever,
-- published to the web process that waits for it (the message's ``mia_reply`` header)
-- or, without one, on the result key's channel.
-- Returns {requeued, failed}.
local prefix = ARGV[1]
local requeued, failed = 0, 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[6]))
for _, job_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], job_id)
  local lease = prefix .. ':lease:' .. job_id
  local fields = redis.call('HMGET', lease, 'message', 'attempts', 'miner', 'list')
  redis.call('DEL', lease)
  local result_key = 'celery-task-meta-' .. job_id
  if fields[1] and redis.call('EXISTS', result_key) == 0 then
    local attempts = tonumber(fields[2]) or 0
    if attempts >= tonumber(ARGV[3]) then
      local message = 'job ' .. job_id .. ' failed: its lease expired ' .. attempts ..
        ' times without a result (last holder: miner ' .. (fields[3] or '?') .. ')'
      local meta = cjson.encode({
        status = 'FAILURE', traceback = cjson.null, children = {}, date_done = ARGV[5],
        task_id = job_id,
        result = {exc_type = 'RuntimeError', exc_module = 'builtins', exc_message = {message}},
      })
      redis.call('SET', result_key, meta, 'EX', tonumber(ARGV[4]))
      local ok, message = pcall(cjson.decode, fields[1])
      local reply = ok and type(message) == 'table' and type(message.headers) == 'table'
        and message.headers.mia_reply
      redis.call('PUBLISH', type(reply) == 'string' and reply ~= '' and reply or result_key, meta)
      failed = failed + 1
    else
      local list = tonumber(fields[4]) or 4
      redis.call('RPUSH', KEYS[1 + list], fields[1])
      redis.call('LPUSH', KEYS[6], job_id)
      redis.call('LTRIM', KEYS[6], 0, 999)
      requeued = requeued + 1
    end
  end
end
return {requeued, failed}
