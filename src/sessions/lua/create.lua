-- KEYS[1] = the owner's session index, KEYS[2] = session hash, KEYS[3] = index of all
-- sessions. ARGV: id, per-principal limit, session ttl ms, index ttl ms, schema version,
-- owner, client info JSON ('' = none), transport JSON ('' = none), the creating
-- replica ('' = no lease), its URL, lease ms.
-- Counts the owner's live sessions and creates the session unless that reaches the limit,
-- atomically. An index entry's score is its session's last access (the prelude keeps it
-- current to within its slack), so the entries older than the timeout and the slack are
-- expired sessions: they are dropped first, O(log n + expired), and ZCARD counts the rest.
-- With KEYS[4] (an idempotent create: ARGV[12] = the arguments' fingerprint, ARGV[13] =
-- how long the first reply is kept, ms) a retry replays the first call's session.
-- Replies 'full', 'exists' (never overwrites), 'retry_conflict' (the key was used with
-- other arguments), {'replay', id, creation time} or {'ok', creation time in ms}.
if KEYS[4] then
  local first = redis.call('GET', KEYS[4])
  if first then
    local fp, id, created = string.match(first, '^([^|]*)|([^|]*)|([^|]*)$')
    if fp ~= ARGV[12] then return {'retry_conflict'} end
    return {'replay', id, created}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
-- A key expires once its TTL has passed (not at the instant it ends): keep the boundary.
-- A score may lag its session's last access by the prelude's index slack: the cutoff
-- moves back by as much, so a live session is always counted.
local timeout = tonumber(ARGV[3])
local slack = math.min(math.floor(timeout / 64), 15000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf',
  '(' .. string.format('%.0f', now_ms - timeout - slack))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {'full'} end
redis.call('HSET', KEYS[2], 'v', ARGV[5], 'owner', ARGV[6], 'created', now,
  'accessed', now, 'indexed', now, 'bytes', 0)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], 'client', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'init', ARGV[8]) end
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[2], 'node', ARGV[9], 'node_url', ARGV[10],
    'lease', now_ms + tonumber(ARGV[11]))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if KEYS[4] then
  redis.call('SET', KEYS[4], ARGV[12] .. '|' .. ARGV[1] .. '|' .. now, 'PX', ARGV[13])
end
return {'ok', now}
