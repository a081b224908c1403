-- ARGV[3] = 'list' | 'add' | 'clear', ARGV[4] = entry, ARGV[5] = keep, ARGV[6] = max bytes.
-- Entries are a JSON array of strings in one data field.
local field = 'd:history'
local op = ARGV[3]
local raw = redis.call('HGET', key, field)
if op == 'list' then
  return {'ok', raw or ''}
end
local entries = {}
if op == 'add' then
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then entries = decoded end
  end
  table.insert(entries, ARGV[4])
  local keep = tonumber(ARGV[5])
  while #entries > keep do table.remove(entries, 1) end
end
local encoded = nil
if #entries > 0 then encoded = cjson.encode(entries) end
if not set_data(field, encoded, tonumber(ARGV[6])) then return {'too_large'} end
return {'ok', encoded or ''}
