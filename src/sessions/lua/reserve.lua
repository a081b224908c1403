-- KEYS[1] = a principal's session index. ARGV: id, limit, index ttl ms.
-- Adds the id unless the index is full, atomically, and returns the creation time.
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {'full'} end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok', now}
