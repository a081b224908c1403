-- Shared head of every task script. KEYS[1] = the task's record (a hash), KEYS[2] = its
-- lease bucket (the unfinished tasks of its bucket scored by the end of their lease, in
-- the record's hash slot). A record's pending
-- input requests are its fields `q:<key>`, the answers received for them `a:<key>`.
local key = KEYS[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ms(n) return string.format('%.0f', n) end
local function is_terminal(s)
  return s == 'completed' or s == 'failed' or s == 'cancelled'
end
-- Keeps the record `ttl` ms from now (it is kept that long after its last change).
local function keep()
  redis.call('PEXPIRE', key, redis.call('HGET', key, 'ttl'))
end
local function clear_input()
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local p = string.sub(f, 1, 2)
    if p == 'q:' or p == 'a:' then redis.call('HDEL', key, f) end
  end
end
-- Ends the task with `status` and, unless `field` is '', its payload; the task leaves
-- its lease bucket.
local function settle(id, status, field, value)
  clear_input()
  redis.call('HSET', key, 'status', status, 'updated', ms(now_ms()))
  if field ~= '' then redis.call('HSET', key, field, value) end
  redis.call('HDEL', key, 'lease')
  redis.call('ZREM', KEYS[2], id)
  keep()
end
