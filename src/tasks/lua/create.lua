-- ARGV: id, owner principal, replica, tool, ttl ms, poll ms, lease ms, index ttl ms,
-- traceparent of the starting call ('' = none).
-- Creates the task `working`, leased to the replica. Replies {'ok', now} or {'exists'}.
if redis.call('EXISTS', key) == 1 then return {'exists'} end
local now = now_ms()
local lease = now + tonumber(ARGV[7])
redis.call('HSET', key, 'v', 1, 'owner', ARGV[2], 'replica', ARGV[3], 'tool', ARGV[4],
  'status', 'working', 'created', ms(now), 'updated', ms(now), 'ttl', ARGV[5],
  'poll', ARGV[6], 'lease', ms(lease))
if ARGV[9] and ARGV[9] ~= '' then redis.call('HSET', key, 'trace', ARGV[9]) end
keep()
redis.call('ZADD', KEYS[2], lease, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return {'ok', ms(now)}
