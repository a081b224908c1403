-- KEYS[1] = a string holding a millisecond time. ARGV: candidate, ttl ms.
-- Keeps the larger of the stored and the candidate value.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
