-- The first step of a create (src/sessions/redis/create.rs), in the owner's slot: counts
-- the owner's sessions against the cap and reserves a place for a new one.
-- KEYS[1] = the owner's index (ids scored by how long each is known to live, ms, Redis
-- time); a keyed create adds KEYS[2] = its record and KEYS[3] = the owner's index of
-- records. ARGV: 1 = the new id, 2 = the cap, 3 = the reservation's grace (ms), 4 = the
-- index's TTL (ms), 5 = the most candidates to return, 6 = the session timeout (ms), 7 =
-- the id of a reservation of this key that came too late ('' = none), 8 = the request's
-- fingerprint, 9 = how long a record is kept (ms), 10 = the most records an owner keeps;
-- then pairs (id, PTTL of its session) of candidates checked since the last call.
--
-- A checked candidate's score had passed before its PTTL was read, so its create can no
-- longer run (create.lua refuses past a reservation's deadline, and ids are never
-- reused): -2 means gone for good and the entry goes; a live one is scored now + PTTL.
-- Then a keyed create whose record exists replays it ({'replay', id, state}: the
-- creation time, or 'p' and the deadline of a reservation not known to be made), unless
-- that reservation is the one that came too late (ARGV[7]), which this call replaces.
-- Under the cap the id goes in with score now + grace, which the create must beat:
-- {'ok', deadline} (a keyed create adds how many older records it dropped). At the cap:
-- {'full', ids whose score has passed...} (possibly gone; none means full for
-- certain). A key used with other arguments: {'retry_conflict'}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = KEYS[1]
for i = 11, #ARGV - 1, 2 do
  local ttl = tonumber(ARGV[i + 1])
  if ttl == -2 then
    redis.call('ZREM', index, ARGV[i])
  else
    if ttl < 0 then ttl = tonumber(ARGV[6]) end
    redis.call('ZADD', index, 'XX', 'GT', string.format('%.0f', now + ttl), ARGV[i])
  end
end
if KEYS[2] then
  local first = redis.call('GET', KEYS[2])
  if first then
    local fp, id, state = string.match(first, '^([^|]*)|([^|]*)|([^|]*)$')
    if fp ~= ARGV[8] then return {'retry_conflict'} end
    if id ~= ARGV[7] then return {'replay', id, state} end
    redis.call('ZREM', index, id)
  end
end
if redis.call('ZCARD', index) >= tonumber(ARGV[2]) then
  local passed = redis.call('ZRANGE', index, '-inf', '(' .. string.format('%.0f', now),
    'BYSCORE', 'LIMIT', 0, tonumber(ARGV[5]))
  return {'full', unpack(passed)}
end
local deadline = string.format('%.0f', now + tonumber(ARGV[3]))
redis.call('ZADD', index, deadline, ARGV[1])
redis.call('PEXPIRE', index, ARGV[4])
if KEYS[2] then
  local ttl = tonumber(ARGV[9])
  -- The owner's records by write time: expired ones leave, then the oldest until there
  -- is room for this one (each member is a record's key, in this slot).
  local records = KEYS[3]
  redis.call('ZREMRANGEBYSCORE', records, '-inf', '(' .. string.format('%.0f', now - ttl))
  redis.call('ZREM', records, KEYS[2])
  local count = redis.call('ZCARD', records)
  local dropped = 0
  while count >= tonumber(ARGV[10]) do
    redis.call('DEL', redis.call('ZPOPMIN', records)[1])
    count = count - 1
    dropped = dropped + 1
  end
  redis.call('SET', KEYS[2], ARGV[8] .. '|' .. ARGV[1] .. '|p' .. deadline, 'PX', ttl)
  redis.call('ZADD', records, now, KEYS[2])
  redis.call('PEXPIRE', records, ttl)
  return {'ok', deadline, dropped}
end
return {'ok', deadline}
