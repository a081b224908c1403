-- ARGV[3] = the claiming replica ('' = no lease), ARGV[4] = its URL, ARGV[5] = lease ms,
-- ARGV[6] = the replica asking for the transport state ('' = none: it runs the
-- session's worker, or only confirms the session),
-- ARGV[7] (optional) = a replica presumed dead (it could not be connected to and its
-- liveness mark is gone).
-- Returns {'ok', kind, holder, holder URL[, transport state]} after the prelude's owner
-- check and touch: kind 't' for a transport session, '' for one without transport
-- state (a 2026-07-28 handle); holder and URL '' when no replica holds a live lease.
-- The state comes only to a replica asking for it that the session is left to (it holds
-- the lease, or nobody does): the one that restores a worker from it. It is most of
-- what a touch would send back, and a holder's touch or a forwarding replica's has no
-- use for it. A claim takes a free or expired lease, or one the
-- replica presumed dead still holds (a live lease of any other replica stays its own),
-- and renews the claimant's own once less than half of it is left (the holder's keeper
-- renews it too), in this same script, so two replicas can never both take one. Lease
-- ends are Redis times (`TIME`), one clock for every replica.
local held = redis.call('HMGET', key, 'node', 'node_url', 'lease', 'init')
local reader = ARGV[6]
local kind = held[4] and 't' or ''
local function reply(holder, url)
  if reader ~= '' and held[4] and (holder == '' or holder == reader) then
    return {'ok', kind, holder, url, held[4]}
  end
  return {'ok', kind, holder, url}
end
local ends = tonumber(held[3] or '0')
local live = held[1] and ends > now_ms
local dead = ARGV[7] or ''
if live and dead ~= '' and held[1] == dead and dead ~= ARGV[3] then live = false end
if ARGV[3] ~= '' and ((not live) or held[1] == ARGV[3]) then
  local ttl = tonumber(ARGV[5])
  if not live or ends - now_ms < ttl / 2 or held[2] ~= ARGV[4] then
    redis.call('HSET', key, 'node', ARGV[3], 'node_url', ARGV[4], 'lease', now_ms + ttl)
  end
  return reply(ARGV[3], ARGV[4])
end
if live then return reply(held[1], held[2]) end
return reply('', '')
