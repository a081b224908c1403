-- KEYS[1] = session hash; ARGV[1] = replica, ARGV[2] = lease ms ('0' = release).
-- Renews (or releases) the replica's lease on one session. Replies 'held', 'lost'
-- (another replica holds it, or nobody: the lease ran out and was released) or 'gone'
-- (no session).
-- A session its holder served without a touch since the last renewal adds KEYS[2] (its
-- owner's index), ARGV[3] = the owner, ARGV[4] = sliding timeout ms, ARGV[5] = index TTL
-- ms, ARGV[6] = session id: a held lease's renewal then also slides the session's expiry
-- and records the access as a touch does (prelude.lua, with its index slack).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local head = redis.call('HMGET', KEYS[1], 'node', 'owner', 'indexed')
if head[1] ~= ARGV[1] then return 'lost' end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], 'node', 'node_url', 'lease')
  return 'held'
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease', now_ms + tonumber(ARGV[2]))
if KEYS[2] and head[2] == ARGV[3] then
  local now = string.format('%.0f', now_ms)
  local timeout = tonumber(ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if now_ms - (tonumber(head[3]) or 0) >= math.min(math.floor(timeout / 64), 15000) then
    redis.call('HSET', KEYS[1], 'accessed', now, 'indexed', now)
    redis.call('ZADD', KEYS[2], now, ARGV[6])
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  else
    redis.call('HSET', KEYS[1], 'accessed', now)
  end
end
return 'held'
