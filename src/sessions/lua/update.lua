-- ARGV[3] = data field, ARGV[4] = max bytes, ARGV[5] = JSON value (absent = delete).
if not set_data(ARGV[3], ARGV[5], tonumber(ARGV[4])) then
  return {'too_large'}
end
return {'ok'}
