-- Forget miners whose heartbeat expired, announcing each once on the events channel,
-- and take them out of the dispatch index (index.lua). The caller names the candidates
-- (web.fleet.registry.Registry.reap: miners not heard from for a heartbeat TTL) and
-- declares every key this touches: their heartbeat keys, and the index sets of the
-- models their index records name as the caller read them. A candidate whose record
-- changed since is left for the next pass (its sets may not be the declared ones).
--
-- KEYS[1] set of miner ids   KEYS[2] hash miner -> index record (<p>:indexed)
-- KEYS[3] dispatch's copy of the heartbeats (<p>:beats)
-- KEYS[4 .. 3+n] the candidates' heartbeat keys; after them, the index sets
-- ARGV[1] the job path's tag {<p>}   ARGV[2] events channel   ARGV[3] n, the number of candidates
-- ARGV[4 .. 3+n] the candidates' ids   ARGV[4+n .. 3+2n] their records as read ('': none)
-- Any number of web processes may run this at once: SREM decides who announces.
local n = tonumber(ARGV[3])
local gone = 0
for i = 1, n do
  local id, seen = ARGV[3 + i], ARGV[3 + n + i]
  if (redis.call('HGET', KEYS[2], id) or '') == seen and redis.call('EXISTS', KEYS[3 + i]) == 0
      and redis.call('SREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[3], id)
    idx_forget(ARGV[1], id, seen)
    redis.call('PUBLISH', ARGV[2], cjson.encode({
      type = 'state_update', change = 'gone', device_id = id, reason = 'heartbeat expired'}))
    gone = gone + 1
  end
end
return gone
