-- Returns {'ok', HGETALL} after the prelude's owner check and touch.
return {'ok', redis.call('HGETALL', key)}
