-- KEYS[1] = session hash; ARGV[1] = replica, ARGV[2] = lease ms ('0' = release).
-- Renews (or releases) the replica's lease on one session without touching the session
-- itself. Replies 'held', 'lost' (another replica holds it, or nobody: the lease ran
-- out and was released) or 'gone' (no session).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 'lost' end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[1], 'node', 'node_url', 'lease')
  return 'held'
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease', now_ms + tonumber(ARGV[2]))
return 'held'
