-- The first step of a create in steps (src/sessions/redis/create/steps.rs), in the
-- owner's slot: counts the owner's sessions against the cap and reserves a place for a
-- new one. Runs after create_parts.lua.
-- KEYS[1] = the owner's index (ids scored by how long each is known to live, ms, Redis
-- time); a keyed create adds KEYS[2] = its record and KEYS[3] = the owner's index of
-- records. ARGV: 1 = the new id, 2 = the cap, 3 = the reservation's grace (ms), 4 = the
-- index's TTL (ms), 5 = the most candidates to return, 6 = the session timeout (ms), 7 =
-- the id of a reservation of this key that came too late ('' = none), 8 = the request's
-- fingerprint, 9 = how long a record is kept (ms), 10 = the most records an owner keeps;
-- then pairs (id, PTTL of its session) of candidates checked since the last call.
--
-- The checked candidates are judged first. Then a keyed create whose record exists
-- replays it, unless that reservation is the one that came too late (ARGV[7]), which
-- this call replaces. Under the cap the id goes in with score now + grace, which the
-- create must beat: {'ok', deadline} (a keyed create adds how many older records it
-- dropped). At the cap: {'full', ids whose score has passed...} (possibly gone; none
-- means full for certain). A key used with other arguments: {'retry_conflict'}.
local now = clock_ms()
local index = KEYS[1]
for i = 11, #ARGV - 1, 2 do
  judge(index, ARGV[i], tonumber(ARGV[i + 1]), now, tonumber(ARGV[6]))
end
if KEYS[2] then
  local replay = replayed(index, KEYS[2], ARGV[8], ARGV[7])
  if replay then return replay end
end
local passed = passed_at_cap(index, tonumber(ARGV[2]), now, tonumber(ARGV[5]))
if passed then return {'full', unpack(passed)} end
local deadline = ms(now + tonumber(ARGV[3]))
enter(index, ARGV[1], deadline, ARGV[4])
if KEYS[2] then
  local pending = ARGV[8] .. '|' .. ARGV[1] .. '|p' .. deadline
  local dropped = keep_record(KEYS[3], KEYS[2], pending, now, tonumber(ARGV[9]),
    tonumber(ARGV[10]))
  return {'ok', deadline, dropped}
end
return {'ok', deadline}
