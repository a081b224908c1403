-- KEYS[1] = session hash, KEYS[2] = the caller's session index, KEYS[3] = index of all
-- sessions; ARGV[1] = caller principal, ARGV[2] = session id. Deletes only the caller's
-- session, and its index entries with it.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return redis.call('DEL', KEYS[1])
