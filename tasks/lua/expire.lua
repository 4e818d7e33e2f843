-- Put jobs whose lease expired back on the shared queue, or fail them for good.
--
-- KEYS[1] zset of leased job ids by deadline   KEYS[2..5] the shared queue's kombu
-- lists, highest priority first                KEYS[6] the wake list of long-polls
-- KEYS[5 + 2i], KEYS[6 + 2i] the lease and the result key of the i-th job in ARGV
-- ARGV[1] now   ARGV[2] max attempts   ARGV[3] result TTL (s)   ARGV[4] date_done (ISO
-- 8601)   ARGV[5 ..] the ids of the jobs due, as the caller read them from KEYS[1]
-- (web.fleet.leases: it declares their keys); one submitted since is left alone.
--
-- The job goes back to the end of the list it was taken from, so it is the next one
-- served at its priority. A job leased MIA_MAX_ATTEMPTS times without a result ends
-- with a FAILURE result in Celery's format naming it, instead of circling forever,
-- published to the web process that waits for it (the message's ``mia_reply`` header)
-- or, without one, on the result key's channel.
-- Returns {requeued, failed}.
local requeued, failed = 0, 0
for i = 1, #ARGV - 4 do
  local job_id, lease, result_key = ARGV[4 + i], KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local deadline = tonumber(redis.call('ZSCORE', KEYS[1], job_id))
  if deadline and deadline <= tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], job_id)
    local fields = redis.call('HMGET', lease, 'message', 'attempts', 'miner', 'list')
    redis.call('DEL', lease)
    if fields[1] and redis.call('EXISTS', result_key) == 0 then
      local attempts = tonumber(fields[2]) or 0
      if attempts >= tonumber(ARGV[2]) then
        local message = 'job ' .. job_id .. ' failed: its lease expired ' .. attempts ..
          ' times without a result (last holder: miner ' .. (fields[3] or '?') .. ')'
        local meta = cjson.encode({
          status = 'FAILURE', traceback = cjson.null, children = {}, date_done = ARGV[4],
          task_id = job_id,
          result = {exc_type = 'RuntimeError', exc_module = 'builtins', exc_message = {message}},
        })
        redis.call('SET', result_key, meta, 'EX', tonumber(ARGV[3]))
        local ok, sent = pcall(cjson.decode, fields[1])
        local reply = ok and type(sent) == 'table' and type(sent.headers) == 'table'
          and sent.headers.mia_reply
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
end
return {requeued, failed}
