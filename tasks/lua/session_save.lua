-- Save one assistant session and keep at most N sessions (least recently used go).
--
-- KEYS[1] the session's key   KEYS[2] zset of session keys by last use
-- ARGV[1] session JSON        ARGV[2] TTL after the last turn (s)
-- ARGV[3] now                 ARGV[4] most sessions kept
--
-- Sessions also expire on their own after ARGV[2] of inactivity; the zset forgets
-- expired ones lazily here. Returns how many sessions were evicted.
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
local evicted = 0
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], extra)  -- member, score, member, score...
  for i = 1, #popped, 2 do
    redis.call('DEL', popped[i])
    evicted = evicted + 1
  end
end
return evicted
