-- ARGV: replica, then pairs of input key and request (JSON). A working task this
-- replica runs waits for the client: `input_required` with these requests pending.
-- Replies {'ok'} or {status} / {'gone'} when the task cannot wait any more.
local f = redis.call('HMGET', key, 'status', 'replica')
if not f[1] or f[2] ~= ARGV[1] then return {'gone'} end
if f[1] ~= 'working' then return {f[1]} end
clear_input()
for i = 2, #ARGV, 2 do
  redis.call('HSET', key, 'q:' .. ARGV[i], ARGV[i + 1])
end
redis.call('HSET', key, 'status', 'input_required', 'updated', ms(now_ms()))
keep()
return {'ok'}
