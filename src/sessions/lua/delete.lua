-- KEYS[1] = session hash, ARGV[1] = caller principal. Deletes only the caller's session.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
