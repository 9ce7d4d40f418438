-- Mark owner ARGV[2]'s claim 'writing': its request is about to be written.
-- Only the owner's pending record is marked; a record that vanished (a Redis
-- restart) is written again. With ARGV[4] = 'unmark', the other way: its
-- request was refused for sure and a retry waits ('claimed' again). Replies
-- {'ok'|'recreated'|'not_owner', record JSON or ''}.
-- (Runs after guard_prelude.lua.)
local owner, ttl_ms = ARGV[2], tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
local record
local verdict = 'ok'
if current then
  record = cjson.decode(current)
  if record.owner ~= owner or record.state ~= 'pending' then
    return {'not_owner', current}
  end
  if ARGV[4] == 'unmark' then
    record.phase = 'claimed'
    record.written_at = nil
    record.updated_at = fmt(now)
    current = cjson.encode(record)
    redis.call('SET', KEYS[1], current, 'KEEPTTL')
    return {'ok', current}
  end
elseif ARGV[4] == 'unmark' then
  return {'not_owner', ''}
else
  record = {state = 'pending', owner = owner, claimed_at = fmt(now),
    lease_until = fmt(now)}
  verdict = 'recreated'
end
record.phase = 'writing'
record.written_at = fmt(now)
record.updated_at = fmt(now)
current = cjson.encode(record)
if verdict == 'recreated' then
  redis.call('SET', KEYS[1], current, 'PX', ttl_ms)
else
  redis.call('SET', KEYS[1], current, 'KEEPTTL')
end
return {verdict, current}
