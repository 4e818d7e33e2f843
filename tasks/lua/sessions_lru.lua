-- Note that one assistant session was just saved, and find the sessions past the bound
-- (least recently used first). The caller deletes those: each session is a key of its
-- own slot (tasks/keys.py), so this script touches only the index.
--
-- KEYS[1] zset of session keys by last use
-- ARGV[1] the saved session's key (a member here, not a key this script reads)
-- ARGV[2] now (s)   ARGV[3] TTL after the last turn (s)   ARGV[4] most sessions kept
--
-- Sessions also expire on their own after ARGV[3] of inactivity; the zset forgets
-- expired ones lazily here. Returns the keys of the sessions evicted.
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
local evicted = {}
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], extra)  -- member, score, member, score...
  for i = 1, #popped, 2 do evicted[#evicted + 1] = popped[i] end
end
return evicted
