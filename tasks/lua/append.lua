-- Add text to a job's answer so far and, streamed, publish it as one piece, in one
-- step: what a caller can have received is always exactly the recorded text, so the
-- attempt that resumes the job from that text repeats nothing and skips nothing.
--
-- KEYS[1] the job's partial record (hash: owner, text, pieces)
-- ARGV[1] this attempt's id   ARGV[2] the text to add   ARGV[3] how many pieces it holds
-- ARGV[4] '1': start the record again with ARGV[2], taken over (the first save of an
--         attempt that did not claim it: a non-streamed answer, which no caller has seen)
-- ARGV[5] TTL in seconds   ARGV[6] channel to publish on ('' = none)   ARGV[7] the message
-- Returns 1, or 0 if another attempt owns the record (or it is gone: the job ended).
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'text', ARGV[2], 'pieces', ARGV[3])
else
  if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
    return 0
  end
  local text = redis.call('HGET', KEYS[1], 'text') or ''
  redis.call('HSET', KEYS[1], 'text', text .. ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'pieces', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return 1
