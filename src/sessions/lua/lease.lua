-- KEYS[1] = session hash; ARGV[1] = replica, ARGV[2] = lease ms ('0' = release).
-- Renews (or releases) the replica's lease on one session. Replies 'held', 'lost'
-- (another replica holds it, or nobody: the lease ran out and was released) or 'gone'
-- (no session).
-- A session its holder served without a touch since the last renewal adds ARGV[3] = the
-- owner and ARGV[4] = sliding timeout ms: a held lease's renewal then also slides the
-- session's expiry and records the access, as a touch does (prelude.lua).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local head = redis.call('HMGET', KEYS[1], 'node', 'owner')
if head[1] ~= ARGV[1] then return 'lost' end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], 'node', 'node_url', 'lease')
  return 'held'
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease', now_ms + tonumber(ARGV[2]))
if ARGV[3] and head[2] == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('HSET', KEYS[1], 'accessed', string.format('%.0f', now_ms))
end
return 'held'
