-- ARGV: task id, replica, final status, payload field ('result', 'error' or ''), payload
-- (JSON). Settles a task this replica runs, unless it already ended (cancelled, or
-- failed by the sweep). Replies {'ok'}, {status} or {'gone'}.
local f = redis.call('HMGET', key, 'status', 'replica')
if not f[1] or f[2] ~= ARGV[2] then return {'gone'} end
if is_terminal(f[1]) then return {f[1]} end
settle(ARGV[1], ARGV[3], ARGV[4], ARGV[5])
return {'ok'}
