-- ARGV: task id, replica, lease ms, index ttl ms, '1' to set the status message, the
-- message. Extends the lease of a task this replica runs. Replies {status}: the runner
-- stops a task that is finished (e.g. cancelled) or {'gone'} (expired, or not ours).
local f = redis.call('HMGET', key, 'status', 'replica')
if not f[1] or f[2] ~= ARGV[2] then return {'gone'} end
if is_terminal(f[1]) then return {f[1]} end
local now = now_ms()
local lease = now + tonumber(ARGV[3])
redis.call('HSET', key, 'lease', ms(lease))
if ARGV[5] == '1' then redis.call('HSET', key, 'msg', ARGV[6], 'updated', ms(now)) end
redis.call('ZADD', KEYS[2], lease, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
keep()
return {f[1]}
