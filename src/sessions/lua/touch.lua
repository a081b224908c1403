-- ARGV[5] = the claiming replica ('' = no lease), ARGV[6] = its URL, ARGV[7] = lease ms.
-- Returns {'ok', transport state or '', holder, holder URL} after the prelude's owner
-- check and touch; the holder is left out when no replica holds a live lease. A claim
-- takes a free or expired lease and renews the claimant's own, in this same script,
-- so two replicas can never both take one. Lease ends are Redis times (`TIME`), one
-- clock for every replica.
local init = redis.call('HGET', key, 'init') or ''
local lease = redis.call('HMGET', key, 'node', 'node_url', 'lease')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = lease[1] and tonumber(lease[3] or '0') > now_ms
if ARGV[5] ~= '' and ((not live) or lease[1] == ARGV[5]) then
  redis.call('HSET', key, 'node', ARGV[5], 'node_url', ARGV[6],
    'lease', now_ms + tonumber(ARGV[7]))
  return {'ok', init, ARGV[5], ARGV[6]}
end
if live then return {'ok', init, lease[1], lease[2]} end
return {'ok', init}
