-- Settle a claim held by owner ARGV[2]: ARGV[3] is 'sent' (ARGV[4] message
-- ID; the TTL starts again, ARGV[6] ms), 'unknown' (ARGV[5] reason) or
-- 'release' (the send definitely failed: a tombstone for ARGV[7] ms, which
-- later claims of other owners overwrite and late ones of this owner skip).
-- A record that vanished is written again ('recreated'). With owner '' the
-- record is settled whoever holds it (a person's `resolve`). 'reconcile'
-- (a signed status callback: sent as ARGV[4]) settles a pending or unknown
-- record whoever holds it ('settled'), and an owner's later settle finds
-- it sent: a sent record is never unsent, nor given another ID
-- ('conflict'). Replies {'ok'|'recreated'|'not_owner'|'settled'|'conflict'|
-- 'absent', record JSON or ''}.
-- (Runs after guard_prelude.lua.)
local owner, action = ARGV[2], ARGV[3]
local current = redis.call('GET', KEYS[1])
local record
local verdict = 'ok'
if current then
  record = cjson.decode(current)
  if record.state == 'released' then
    if action == 'release' or action == 'reconcile' then return {'ok', ''} end
    current = nil  -- a tombstone counts as no record
  elseif owner ~= '' and record.owner ~= owner then
    return {'not_owner', current}
  end
end
if action == 'reconcile' then
  -- A signed status callback: the API accepted the message as ARGV[4].
  -- Settles a pending or unknown record (keeping its owner, whose own
  -- settle then agrees); never changes a sent one.
  if not current then return {'absent', ''} end
  if record.state == 'sent' then
    if record.message_id == ARGV[4] then return {'ok', current} end
    return {'conflict', current}
  end
  record.state = 'sent'
  record.message_id = ARGV[4]
  record.reason = nil
  record.reconciled = true
  record.updated_at = fmt(now)
  current = cjson.encode(record)
  redis.call('SET', KEYS[1], current, 'PX', tonumber(ARGV[6]))
  return {'settled', current}
end
if current and record.state == 'sent' and owner ~= '' then
  -- Settled already (by a callback, before this attempt's answer): a lost
  -- answer or an error does not unsend it; another ID is a conflict.
  if action == 'sent' and record.message_id ~= ARGV[4] then
    return {'conflict', current}
  end
  return {'ok', current}
end
if not current then
  if action == 'release' then
    if owner ~= '' then
      -- The claim being released may still be on its way (its reply was
      -- lost): a tombstone makes it a no-op when it lands.
      redis.call('SET', KEYS[1], cjson.encode({state = 'released', owner = owner}),
        'PX', tonumber(ARGV[7]))
    end
    return {'ok', ''}
  end
  -- The record vanished while the send was in flight (a Redis restart or
  -- failover, or an expiry): what became of the send is known now, so it
  -- is written again rather than left to read as "free".
  record = {owner = owner, claimed_at = fmt(now), lease_until = fmt(now)}
  if owner ~= '' then verdict = 'recreated' end
end
if action == 'release' then
  if owner ~= '' then
    -- A tombstone, not a deletion: a duplicate of this owner's claim still
    -- on its way (a command redis-py retried) must not land after it.
    redis.call('SET', KEYS[1], cjson.encode({state = 'released', owner = owner}),
      'PX', tonumber(ARGV[7]))
  else
    redis.call('DEL', KEYS[1])
  end
  return {'ok', ''}
end
if owner == '' then
  -- Reconciled by a person: no attempt holds the key any more, so a stale
  -- attempt's settle (its owner's) cannot overwrite what was decided.
  record.owner = ''
end
record.state = action
record.updated_at = fmt(now)
if action == 'sent' then
  record.message_id = ARGV[4]
  record.reason = nil
  current = cjson.encode(record)
  redis.call('SET', KEYS[1], current, 'PX', tonumber(ARGV[6]))
else
  record.reason = ARGV[5]
  current = cjson.encode(record)
  if verdict == 'recreated' then
    redis.call('SET', KEYS[1], current, 'PX', tonumber(ARGV[6]))
  else
    redis.call('SET', KEYS[1], current, 'KEEPTTL')
  end
end
return {verdict, current}
