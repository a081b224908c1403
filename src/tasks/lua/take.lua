-- ARGV: replica. Once every request is answered (the task is `working` again), hands
-- the answers to the replica running it and forgets them. Replies {'ok', key, answer,
-- ...}, {'waiting'}, or {status} / {'gone'} when the task ended.
local f = redis.call('HMGET', key, 'status', 'replica')
if not f[1] or f[2] ~= ARGV[1] then return {'gone'} end
if is_terminal(f[1]) then return {f[1]} end
if f[1] ~= 'working' then return {'waiting'} end
local r = {'ok'}
for _, field in ipairs(redis.call('HKEYS', key)) do
  if string.sub(field, 1, 2) == 'a:' then
    table.insert(r, string.sub(field, 3))
    table.insert(r, redis.call('HGET', key, field))
    redis.call('HDEL', key, field)
  end
end
return r
