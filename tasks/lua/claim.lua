-- An attempt of a job takes its answer so far over (miners.resume): from now on only
-- this attempt may add to it (append.lua), so one that was thought dead and still
-- runs can add nothing more. A re-run claims it here before its engine starts; a first
-- attempt of a streamed job takes it with its first piece instead (append.lua's '2'),
-- unless a re-run has claimed it by then.
--
-- KEYS[1] the job's partial record (hash: owner, text, pieces)   KEYS[2] its abort key
-- ARGV[1] this attempt's id   ARGV[2] TTL in seconds
-- Returns {text so far, pieces so far, 1 if its caller went away else 0}.
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local found = redis.call('HMGET', KEYS[1], 'text', 'pieces')
return {found[1] or '', tonumber(found[2] or '0'), redis.call('EXISTS', KEYS[2])}
