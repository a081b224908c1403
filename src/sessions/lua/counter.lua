-- ARGV[3] = 'get' | 'add' | 'reset', ARGV[4] = amount, ARGV[5] = max bytes; `head[3]` is
-- the counter's stored text (`peek` = 'd:counter'). HINCRBY does the arithmetic in 64-bit
-- integers; Lua numbers are doubles, so its reply is exact below 2^53, formatted from it
-- there and read back with HGET beyond.
local field = peek
local op = ARGV[3]
if op == 'add' then
  local before = head[3] and string.len(head[3]) or 0
  local r = redis.pcall('HINCRBY', key, field, ARGV[4])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'overflow') then return {'overflow'} end
    return {'not_integer'}
  end
  local v
  if r > -9007199254740992 and r < 9007199254740992 then
    v = string.format('%.0f', r)
  else
    v = redis.call('HGET', key, field)
  end
  local after = string.len(v)
  if after ~= before then
    local bytes = tonumber(redis.call('HGET', key, 'bytes') or '0')
    if after > before and bytes - before + after > tonumber(ARGV[5]) then
      -- Undo inside the same script: nobody can observe the intermediate value. The
      -- amount is a canonical 64-bit decimal (never 0 here: the length changed); its
      -- negation is its text with the sign flipped, except for the smallest one.
      local amount = ARGV[4]
      if before == 0 then
        redis.call('HDEL', key, field)
      elseif amount == '-9223372036854775808' then
        redis.call('HINCRBY', key, field, '9223372036854775807')
        redis.call('HINCRBY', key, field, '1')
      elseif string.sub(amount, 1, 1) == '-' then
        redis.call('HINCRBY', key, field, string.sub(amount, 2))
      else
        redis.call('HINCRBY', key, field, '-' .. amount)
      end
      return {'too_large'}
    end
    redis.call('HSET', key, 'bytes', bytes - before + after)
  end
  return {'ok', v}
end
if op == 'reset' then
  if not set_data(field, '0', tonumber(ARGV[5])) then return {'too_large'} end
  return {'ok', '0'}
end
local v = head[3] or '0'
if not string.match(v, '^-?%d+$') then return {'not_integer'} end
return {'ok', v}
