-- Returns {'ok', transport state or ''} after the prelude's owner check and touch.
return {'ok', redis.call('HGET', key, 'init') or ''}
