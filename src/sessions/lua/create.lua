-- The second step of a create (src/sessions/redis/create.rs): writes the session record
-- under a reservation its owner's index already counts. KEYS[1] = session hash, KEYS[2]
-- = its tombstone (both in the session's slot). ARGV: the reservation's deadline (ms,
-- Redis time), the clock skew tolerated between Redis nodes (ms), session ttl ms, schema
-- version, owner, client info JSON ('' = none), transport JSON ('' = none), the creating
-- replica ('' = no lease), its URL, lease ms.
-- A reservation whose deadline has passed may have been found without a session and
-- dropped from the count (the index is on another node, with its own clock): so the
-- record is written only while this node's time is short of the deadline by the skew,
-- and never for an id deleted since (a tombstone).
-- Replies {'ok', creation time in ms}, {'exists', creation time} (the owner's session
-- is already there: a retried create), {'taken'} (another owner's), {'gone', creation
-- time} (made and deleted since) or {'late'}.
local head = redis.call('HMGET', KEYS[1], 'owner', 'created')
if head[1] then
  if head[1] == ARGV[5] then return {'exists', head[2]} end
  return {'taken'}
end
local gone = redis.call('GET', KEYS[2])
if gone then return {'gone', gone} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
if now_ms >= deadline - tonumber(ARGV[2]) then return {'late'} end
local now = string.format('%.0f', now_ms)
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'owner', ARGV[5], 'created', now,
  'accessed', now, 'bytes', 0, 'reserved', ARGV[1])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'client', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'init', ARGV[7]) end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'node', ARGV[8], 'node_url', ARGV[9],
    'lease', now_ms + tonumber(ARGV[10]))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok', now}
