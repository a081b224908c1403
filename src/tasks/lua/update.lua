-- ARGV: caller principal, then pairs of input key and answer (JSON). Answers for keys
-- the task is waiting on are kept and their requests dropped; other keys are ignored.
-- Once nothing is pending the task is `working` again. A task not waiting for input
-- is left alone. Replies {'ok', status, replica} or {'unknown'}.
if redis.call('HGET', key, 'owner') ~= ARGV[1] then return {'unknown'} end
local status = redis.call('HGET', key, 'status')
if status == 'input_required' then
  for i = 2, #ARGV, 2 do
    if redis.call('HDEL', key, 'q:' .. ARGV[i]) == 1 then
      redis.call('HSET', key, 'a:' .. ARGV[i], ARGV[i + 1])
    end
  end
  local pending = false
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'q:' then pending = true break end
  end
  if not pending then status = 'working' end
  redis.call('HSET', key, 'status', status, 'updated', ms(now_ms()))
  keep()
end
return {'ok', status, redis.call('HGET', key, 'replica')}
