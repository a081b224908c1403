-- Shared head of every per-session script: KEYS[1] = session hash; ARGV[1] = caller
-- principal, ARGV[2] = sliding timeout in ms; the operation's own arguments follow.
-- Checks the owner, slides the expiry and defines set_data, which keeps the `bytes`
-- total of data values and enforces its limit. An idempotent call adds KEYS[2] (its
-- record) and KEYS[3] (the session's index of records) and, after the operation's
-- arguments, ARGV[#ARGV - 3] = the request's fingerprint, ARGV[#ARGV - 2] = how long to
-- keep the record (ms), ARGV[#ARGV - 1] and ARGV[#ARGV] = the most records and bytes of
-- records the session keeps. Every key is in the session's hash slot: the owner's
-- index is not touched here (it scores a session by how long it is known to live,
-- which only creates, deletes and the checks at the cap and in upkeep move).
--
-- Every call costs three commands (HMGET, TIME and the operation's own), since each
-- `redis.call` costs about as much as the command it runs: `accessed` is written and
-- the expiry slid together, at most once a second (a quarter of the timeout when that
-- is shorter), so a session's key lives at least three quarters of its sliding
-- timeout, and all of it less a second, after its last call. A script that defines `peek` (a field name) before this head
-- gets that field's value in `head[3]` from the same HMGET.
local key = KEYS[1]
local head
if peek then
  head = redis.call('HMGET', key, 'owner', 'accessed', peek)
else
  head = redis.call('HMGET', key, 'owner', 'accessed')
end
if head[1] ~= ARGV[1] then
  return {'unknown'}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = string.format('%.0f', now_ms)
if now_ms - (tonumber(head[2]) or 0) >= math.min(1000, tonumber(ARGV[2]) / 4) then
  redis.call('HSET', key, 'accessed', now)
  redis.call('PEXPIRE', key, ARGV[2])
end

-- Sets (value ~= nil) or deletes one data field; false when the limit would be exceeded.
local function set_data(field, value, max_bytes)
  local old = redis.call('HSTRLEN', key, field)
  local bytes = tonumber(redis.call('HGET', key, 'bytes') or '0')
  local new = 0
  if value then new = string.len(value) end
  if new > old and bytes - old + new > max_bytes then
    return false
  end
  if value then
    redis.call('HSET', key, field, value)
  else
    redis.call('HDEL', key, field)
  end
  redis.call('HSET', key, 'bytes', bytes - old + new)
  return true
end

-- An idempotent retry gets the first reply back and changes nothing; a key reused with
-- other arguments is refused. `finish` keeps the reply of a call that succeeded.
local idem = KEYS[2]
local fingerprint = idem and ARGV[#ARGV - 3]
if idem then
  local prior = redis.call('GET', idem)
  if prior then
    local record = cjson.decode(prior)
    if record.f ~= fingerprint then return {'retry_conflict'} end
    return record.r
  end
end
-- The index (KEYS[3]) lists the session's records as '<bytes>:<key>' scored by when
-- they were written, and the hash's `rbytes` field their total: expired ones leave it
-- first, then the oldest until the session is within both limits, so what a session
-- keeps is bounded whatever the rate of keyed calls. Returns how many it dropped.
local function keep(record)
  local ttl = tonumber(ARGV[#ARGV - 2])
  redis.call('SET', idem, record, 'PX', ttl)
  local index = KEYS[3]
  local bytes = tonumber(redis.call('HGET', key, 'rbytes') or '0')
  local cutoff = string.format('%.0f', now_ms - ttl)
  for _, member in ipairs(redis.call('ZRANGE', index, '-inf', cutoff, 'BYSCORE')) do
    bytes = bytes - tonumber(string.match(member, '^(%d+):'))
  end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff)
  redis.call('ZADD', index, now, string.len(record) .. ':' .. idem)
  bytes = bytes + string.len(record)
  local max_records, max_bytes = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
  local count = redis.call('ZCARD', index)
  local dropped = 0
  while count > 1 and (count > max_records or bytes > max_bytes) do
    local oldest = redis.call('ZPOPMIN', index)[1]
    local size, old = string.match(oldest, '^(%d+):(.*)$')
    -- The record's key, in this session's slot: it was KEYS[2] of an earlier call.
    redis.call('DEL', old)
    bytes = bytes - tonumber(size)
    count = count - 1
    dropped = dropped + 1
  end
  redis.call('HSET', key, 'rbytes', math.max(bytes, 0))
  redis.call('PEXPIRE', index, ttl)
  return dropped
end
-- A reply whose record was written comes wrapped: {'kept', records dropped, reply...}
-- (its replay, the record itself, does not).
local function finish(reply)
  if idem and reply[1] == 'ok' then
    local dropped = keep(cjson.encode({f = fingerprint, r = reply}))
    return {'kept', dropped, unpack(reply)}
  end
  return reply
end
