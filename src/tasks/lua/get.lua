-- ARGV: caller principal. Replies {'ok', field, value, ...} or {'unknown'} (no such
-- task, or another principal's).
if redis.call('HGET', key, 'owner') ~= ARGV[1] then return {'unknown'} end
local r = redis.call('HGETALL', key)
table.insert(r, 1, 'ok')
return r
