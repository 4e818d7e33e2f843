-- Store a job's result unless one is already stored: the first result wins.
--
-- KEYS[1] the result key (celery-task-meta-<job>)
-- ARGV[1] the encoded Celery meta   ARGV[2] TTL in seconds (0: none)
--
-- A job may run twice (at-least-once delivery after a miner dies); the first
-- SUCCESS or FAILURE stored is what every caller sees. Intermediate states never
-- overwrite a final one. Publishes the stored value on the key's channel, as
-- Celery's Redis backend does. Returns 1 if stored, 0 if an earlier result stays.
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
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
