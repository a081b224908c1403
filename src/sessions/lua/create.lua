-- KEYS[1] = session hash. ARGV: ttl ms, created ms, schema version, owner, client info
-- JSON ('' = none), transport JSON ('' = none). Fails with 'exists' rather than overwrite.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'owner', ARGV[4], 'created', ARGV[2],
  'accessed', ARGV[2], 'bytes', 0)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'client', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'init', ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {'ok'}
