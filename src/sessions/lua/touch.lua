-- ARGV[3] = the claiming replica ('' = no lease), ARGV[4] = its URL, ARGV[5] = lease ms,
-- ARGV[6] (optional) = a replica presumed dead (it could not be connected to and its
-- liveness mark is gone).
-- Returns {'ok', transport state or '', holder, holder URL} after the prelude's owner
-- check and touch; the holder is left out when no replica holds a live lease. A claim
-- takes a free or expired lease, or one the replica presumed dead still holds (a live
-- lease of any other replica stays its own), and renews the claimant's own once less
-- than half of it is left (the holder's keeper renews it too), in this same script, so
-- two replicas can never both take one. Lease ends are Redis times (`TIME`), one clock
-- for every replica.
local held = redis.call('HMGET', key, 'init', 'node', 'node_url', 'lease')
local init = held[1] or ''
local ends = tonumber(held[4] or '0')
local live = held[2] and ends > now_ms
local dead = ARGV[6] or ''
if live and dead ~= '' and held[2] == dead and dead ~= ARGV[3] then live = false end
if ARGV[3] ~= '' and ((not live) or held[2] == ARGV[3]) then
  local ttl = tonumber(ARGV[5])
  if not live or ends - now_ms < ttl / 2 or held[3] ~= ARGV[4] then
    redis.call('HSET', key, 'node', ARGV[3], 'node_url', ARGV[4], 'lease', now_ms + ttl)
  end
  return {'ok', init, ARGV[3], ARGV[4]}
end
if live then return {'ok', init, held[2], held[3]} end
return {'ok', init}
