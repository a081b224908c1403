-- KEYS[1] = session hash, KEYS[2] = its tombstone; ARGV[1] = caller principal. Deletes
-- only the caller's session (its index entries are removed next, in their own slots).
-- A session created in steps and deleted before its reservation's deadline (`reserved`)
-- leaves a tombstone until then, so a retried create of the same reservation cannot make
-- it again outside the count (record.lua). One made in one script had no reservation.
local head = redis.call('HMGET', KEYS[1], 'owner', 'created', 'reserved')
if head[1] ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = (tonumber(head[3]) or 0) - now_ms
if left > 0 then redis.call('SET', KEYS[2], head[2] or '0', 'PX', string.format('%.0f', left)) end
return redis.call('DEL', KEYS[1])
