-- Store a job's result unless one is already stored: the first result wins.
--
-- KEYS[1] the result key (celery-task-meta-<job>)
-- ARGV[1] the encoded Celery meta   ARGV[2] TTL in seconds (0: none)
-- ARGV[3] the channel of the web process that waits for it (the job's reply_to);
--         absent or '': the key's own channel, as Celery's Redis backend publishes
--
-- A job may run twice (at-least-once delivery after a miner dies); the first
-- SUCCESS or FAILURE stored is what every caller sees. Intermediate states never
-- overwrite a final one. Publishes the stored value where it is awaited. Returns 1
-- if stored, 0 if an earlier result stays.
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and (meta.status == 'SUCCESS' or meta.status == 'FAILURE') then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
local channel = ARGV[3]
if not channel or channel == '' then channel = KEYS[1] end
redis.call('PUBLISH', channel, ARGV[1])
return 1
