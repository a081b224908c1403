-- ARGV[5] = 'get' | 'add' | 'reset', ARGV[6] = amount, ARGV[7] = max bytes.
-- HINCRBY does the arithmetic in 64-bit integers (Lua numbers are doubles), and the
-- value is read back with HGET for the same reason.
local field = 'd:counter'
local op = ARGV[5]
if op == 'add' then
  local old_value = redis.call('HGET', key, field)
  local before = redis.call('HSTRLEN', key, field)
  local r = redis.pcall('HINCRBY', key, field, ARGV[6])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'overflow') then return {'overflow'} end
    return {'not_integer'}
  end
  local after = redis.call('HSTRLEN', key, field)
  local bytes = tonumber(redis.call('HGET', key, 'bytes') or '0')
  if after > before and bytes - before + after > tonumber(ARGV[7]) then
    -- Undo inside the same script: nobody can observe the intermediate value.
    if old_value then
      redis.call('HSET', key, field, old_value)
    else
      redis.call('HDEL', key, field)
    end
    return {'too_large'}
  end
  redis.call('HSET', key, 'bytes', bytes - before + after)
elseif op == 'reset' then
  if not set_data(field, '0', tonumber(ARGV[7])) then return {'too_large'} end
end
local v = redis.call('HGET', key, field) or '0'
if not string.match(v, '^-?%d+$') then return {'not_integer'} end
return {'ok', v}
