-- ARGV: caller principal, task id. An unfinished task becomes `cancelled` at once (its
-- replica is told to stop); a finished one is left as it is. Replies
-- {'ok', status, replica} or {'unknown'}.
if redis.call('HGET', key, 'owner') ~= ARGV[1] then return {'unknown'} end
local status = redis.call('HGET', key, 'status')
if not is_terminal(status) then
  settle(ARGV[2], 'cancelled', '', '')
  status = 'cancelled'
end
return {'ok', status, redis.call('HGET', key, 'replica')}
