-- ARGV: task id, error (JSON). The sweep: an unfinished task whose lease ended fails
-- with this error; a finished or vanished one leaves the index; a renewed one keeps its
-- place. Replies {'failed', owner}, {'live'} or {'skip'}.
local f = redis.call('HMGET', key, 'status', 'lease', 'owner')
if not f[1] or is_terminal(f[1]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'skip'}
end
local lease = tonumber(f[2] or '0')
if lease > now_ms() then
  redis.call('ZADD', KEYS[2], lease, ARGV[1])
  return {'live'}
end
settle(ARGV[1], 'failed', 'error', ARGV[2])
return {'failed', f[3] or ''}
