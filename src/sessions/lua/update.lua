-- ARGV[5] = data field, ARGV[6] = max bytes, ARGV[7] = JSON value (absent = delete).
if not set_data(ARGV[5], ARGV[7], tonumber(ARGV[6])) then
  return {'too_large'}
end
return {'ok'}
