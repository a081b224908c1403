-- A whole create in one script, on a single node (src/sessions/redis/create.rs), where
-- every key is on the one node: what reserve.lua, record.lua and the confirmation do in
-- steps, at once, so no reservation is needed. Runs after create_parts.lua.
-- KEYS[1] = the owner's index, KEYS[2] = the session hash, KEYS[3] = its tombstone,
-- KEYS[4] = the session's bucket; a keyed create adds KEYS[5] = its record and KEYS[6] =
-- the owner's index of records. ARGV: 1 = the new id, 2 = the cap, 3..10 = the session's
-- record (see `write_session`; ARGV[3] is the session timeout, ARGV[5] the owner),
-- 11 = the index's TTL (ms), 12 = the most candidates checked per round, 13 = the rounds
-- of checks at the cap, 14 = the session's member in its bucket, 15 and 16 = what comes
-- before and after an id in a session's key; 17 = the request's fingerprint, 18 = how
-- long a record is kept (ms), 19 = the most records an owner keeps.
--
-- A keyed create whose record exists replays it ({'replay', id, state}, or
-- {'retry_conflict'}); a record still naming a pending reservation (made in steps) is
-- left to the steps to finish. At the cap the entries whose score has passed are
-- checked here (their sessions' PTTL) and judged as in steps, a round at a time; full
-- after the last round (or with none to check): {'full'}. Then what stops the record
-- (`occupied`), or the session is written and entered, scored by its expiry, in its
-- owner's index and its bucket, and a keyed create's record marked made:
-- {'ok', creation time in ms} (a keyed create adds how many older records it dropped).
local index, session = KEYS[1], KEYS[2]
local now = clock_ms()
if KEYS[5] then
  local replay = replayed(index, KEYS[5], ARGV[17], '')
  if replay then return replay end
end
local timeout = tonumber(ARGV[3])
local rounds = tonumber(ARGV[13])
for round = 0, rounds do
  local passed = passed_at_cap(index, tonumber(ARGV[2]), now, tonumber(ARGV[12]))
  if not passed then break end
  if #passed == 0 or round == rounds then return {'full'} end
  for _, id in ipairs(passed) do
    local ttl = redis.call('PTTL', ARGV[15] .. id .. ARGV[16])
    judge(index, id, ttl, now, timeout)
  end
end
local found = occupied(session, KEYS[3], ARGV[5])
if found then return found end
local created = write_session(session, now, 3, nil)
local expires = ms(now + timeout)
enter(index, ARGV[1], expires, ARGV[11])
enter(KEYS[4], ARGV[14], expires, ARGV[11])
if KEYS[5] then
  local made = ARGV[17] .. '|' .. ARGV[1] .. '|' .. created
  local dropped = keep_record(KEYS[6], KEYS[5], made, now, tonumber(ARGV[18]),
    tonumber(ARGV[19]))
  return {'ok', created, dropped}
end
return {'ok', created}
