-- Shared head of the create scripts (src/sessions/redis/create.rs): reserve.lua and
-- record.lua, the steps of one hash slot each that a create takes on Redis Cluster, and
-- create_node.lua, the whole create in one script on a single node. It only defines
-- functions; each script maps its own KEYS and ARGV onto them.

-- Now on Redis's clock, in ms.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A time or score in ms as Redis takes it (no exponent).
local function ms(n)
  return string.format('%.0f', n)
end

-- Applies what a check found of `id`, an entry of the owner's `index` whose score had
-- passed: its session's remaining life `ttl` (PTTL, ms). Its create can no longer run
-- (record.lua refuses past a reservation's deadline, and ids are never reused), so -2
-- means gone for good and the entry goes; a live one is scored now + PTTL (`timeout`
-- for a session without an expiry).
local function judge(index, id, ttl, now, timeout)
  if ttl == -2 then
    redis.call('ZREM', index, id)
  else
    if ttl < 0 then ttl = timeout end
    redis.call('ZADD', index, 'XX', 'GT', ms(now + ttl), id)
  end
end

-- A keyed create's earlier outcome in its `record`: {'replay', id, state} (state: the
-- creation time, or 'p' and the deadline of a reservation not known to be made), or
-- {'retry_conflict'} when the key came with another `fingerprint`. Nil when there is
-- none, or when it names `late`, a reservation of this key that came too late: its entry
-- then leaves the owner's `index`, and the caller replaces it.
local function replayed(index, record, fingerprint, late)
  local first = redis.call('GET', record)
  if not first then return nil end
  local fp, id, state = string.match(first, '^([^|]*)|([^|]*)|([^|]*)$')
  if fp ~= fingerprint then return {'retry_conflict'} end
  if id ~= late then return {'replay', id, state} end
  redis.call('ZREM', index, id)
  return nil
end

-- Nil while the owner's `index` holds fewer than `cap` entries; at the cap, the entries
-- whose score has passed (at most `max`; none means full for certain).
local function passed_at_cap(index, cap, now, max)
  if redis.call('ZCARD', index) < cap then return nil end
  return redis.call('ZRANGE', index, '-inf', '(' .. ms(now), 'BYSCORE', 'LIMIT', 0, max)
end

-- Puts `id` in the owner's `index` with `score` and refreshes the index's TTL.
local function enter(index, id, score, index_ttl)
  redis.call('ZADD', index, score, id)
  redis.call('PEXPIRE', index, index_ttl)
end

-- Writes a keyed create's `record` (`value` = fingerprint|id|state), kept `ttl` ms, into
-- the owner's `records` (their keys by write time): expired ones leave, then the oldest
-- until there is room for this one under `max` (each member is a record's key, in the
-- owner's slot). Returns how many of the oldest made room.
local function keep_record(records, record, value, now, ttl, max)
  redis.call('ZREMRANGEBYSCORE', records, '-inf', '(' .. ms(now - ttl))
  redis.call('ZREM', records, record)
  local count = redis.call('ZCARD', records)
  local dropped = 0
  while count >= max do
    redis.call('DEL', redis.call('ZPOPMIN', records)[1])
    count = count - 1
    dropped = dropped + 1
  end
  redis.call('SET', record, value, 'PX', ttl)
  redis.call('ZADD', records, now, record)
  redis.call('PEXPIRE', records, ttl)
  return dropped
end

-- What stops `owner`'s record from being written at `session`: {'exists', creation time}
-- (the owner's session is already there: a retried create), {'taken'} (another
-- owner's) or {'gone', creation time} (made and deleted since: its `tombstone`). Nil
-- when nothing does.
local function occupied(session, tombstone, owner)
  local head = redis.call('HMGET', session, 'owner', 'created')
  if head[1] then
    if head[1] == owner then return {'exists', head[2]} end
    return {'taken'}
  end
  local gone = redis.call('GET', tombstone)
  if gone then return {'gone', gone} end
  return nil
end

-- Writes the record of a session made at `now_ms` at `session` from eight ARGV values
-- starting at `at`: session ttl ms, schema version, owner, client info JSON ('' = none),
-- transport JSON ('' = none), the creating replica ('' = no lease), its URL, lease ms;
-- and `reserved`, the deadline of its reservation (nil: none, made in one script).
-- Returns the creation time as written.
local function write_session(session, now_ms, at, reserved)
  local now = ms(now_ms)
  local fields = {'v', ARGV[at + 1], 'owner', ARGV[at + 2], 'created', now,
    'accessed', now, 'bytes', 0}
  local function add(field, value)
    fields[#fields + 1] = field
    fields[#fields + 1] = value
  end
  if reserved then add('reserved', reserved) end
  if ARGV[at + 3] ~= '' then add('client', ARGV[at + 3]) end
  if ARGV[at + 4] ~= '' then add('init', ARGV[at + 4]) end
  if ARGV[at + 5] ~= '' then
    add('node', ARGV[at + 5])
    add('node_url', ARGV[at + 6])
    add('lease', ms(now_ms + tonumber(ARGV[at + 7])))
  end
  redis.call('HSET', session, unpack(fields))
  redis.call('PEXPIRE', session, ARGV[at])
  return now
end
