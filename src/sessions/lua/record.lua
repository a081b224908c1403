-- The second step of a create in steps (src/sessions/redis/create/steps.rs): writes the
-- session record under a reservation its owner's index already counts. Runs after
-- create_parts.lua. KEYS[1] = session hash, KEYS[2] = its tombstone (both in the
-- session's slot). ARGV: 1 = the reservation's deadline (ms, Redis time), 2 = the clock
-- skew tolerated between Redis nodes (ms), 3..10 = the session's record (see
-- `write_session`).
-- A reservation whose deadline has passed may have been found without a session and
-- dropped from the count (the index is on another node, with its own clock): so the
-- record is written only while this node's time is short of the deadline by the skew,
-- and never for an id deleted since (a tombstone).
-- Replies {'ok', creation time in ms}, what `occupied` found, or {'late'}.
local found = occupied(KEYS[1], KEYS[2], ARGV[5])
if found then return found end
local now = clock_ms()
if now >= tonumber(ARGV[1]) - tonumber(ARGV[2]) then return {'late'} end
return {'ok', write_session(KEYS[1], now, 3, ARGV[1])}
