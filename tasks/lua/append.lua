-- Add text to a job's answer so far and, streamed, publish it as one piece, in one
-- step: what a caller can have received is always exactly the recorded text, so the
-- attempt that resumes the job from that text repeats nothing and skips nothing.
--
-- KEYS[1] the job's partial record (hash: owner, text, pieces)   KEYS[2] its abort key
-- ARGV[1] this attempt's id   ARGV[2] the text to add   ARGV[3] how many pieces it holds
-- ARGV[4] how the record is taken:
--   '0' it is this attempt's already (claim.lua, or an earlier call here)
--   '1' start it again with ARGV[2], taken over (the first save of an attempt that did
--       not claim it: a non-streamed answer, which no caller has seen)
--   '2' take it with this, the first streamed piece of a first attempt (which skipped
--       claim.lua's round trip), unless another attempt owns it: a re-run, newer than
--       any first attempt, claimed it. If it holds text already, that is this call's
--       own, sent before with its answer lost: nothing is added, the text is returned
--       and the attempt continues from it
-- ARGV[5] TTL in seconds   ARGV[6] channel to publish on ('' = none)   ARGV[7] the message
-- ARGV[8] with '0': the length in bytes of the answer so far that ARGV[2] follows. A call
--   whose answer was lost is sent again with what followed it: the part of ARGV[2] the
--   record holds already is not added twice. ARGV[3] is then the record's whole count.
-- Returns 1, or 0 if another attempt owns the record (or it is gone: the job ended);
-- with '2' and not refused: {1 if added else 0, the answer so far, its pieces, 1 if the
-- caller went away}.
local taking = ARGV[4] == '2'
local aborted = 0
if taking then
  local found = redis.call('HMGET', KEYS[1], 'owner', 'text', 'pieces')
  if found[1] and found[1] ~= ARGV[1] then
    return 0
  end
  aborted = redis.call('EXISTS', KEYS[2])
  if found[2] and found[2] ~= '' then
    redis.call('HSET', KEYS[1], 'owner', ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    return {0, found[2], tonumber(found[3] or '0'), aborted}
  end
end
if ARGV[4] ~= '0' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'text', ARGV[2], 'pieces', ARGV[3])
else
  if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
    return 0
  end
  local text = redis.call('HGET', KEYS[1], 'text') or ''
  local have = #text - tonumber(ARGV[8])  -- bytes of ARGV[2] a lost call recorded
  if have < 0 or have > #ARGV[2]
      or string.sub(text, #text - have + 1) ~= string.sub(ARGV[2], 1, have) then
    have = 0  -- not this call's own: added whole
  end
  redis.call('HSET', KEYS[1], 'text', text .. string.sub(ARGV[2], have + 1), 'pieces', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
if taking then
  return {1, '', 0, aborted}
end
return 1
