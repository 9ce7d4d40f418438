-- Claim a dedupe key (ARGV[2] = 'claim') with SET NX and a TTL, or only look
-- at it (ARGV[2] = 'peek'). A claim is in phase 'claimed' (waiting to send:
-- nothing written) until it is marked 'writing' (mark.lua). A claim finding
-- its own pending record (same owner: the command was retried) counts as
-- claimed. A pending record whose lease ran out (its worker stopped) is free
-- again while 'claimed', and becomes 'unknown' once 'writing' (or without a
-- phase: written by an older version), keeping its TTL. With ARGV[6] (give
-- up after, seconds; '' for never) an unknown record unchanged that long is
-- free again too. ARGV[3] owner token, ARGV[4] lease seconds, ARGV[5] TTL
-- ms. Replies {'claimed'|'exists'|'absent', record JSON}.
-- (Runs after guard_prelude.lua.)
local mode, owner = ARGV[2], ARGV[3]
local lease, ttl_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local give_up = tonumber(ARGV[6] or '')
local function fresh_claim()
  return cjson.encode({state = 'pending', phase = 'claimed', owner = owner,
    claimed_at = fmt(now), updated_at = fmt(now), lease_until = fmt(now + lease)})
end
-- Replace what the key holds (nothing sent, or given up on) by this claim.
local function claim_afresh()
  local fresh = fresh_claim()
  redis.call('SET', KEYS[1], fresh, 'PX', ttl_ms)
  return {'claimed', fresh}
end
if mode == 'claim' then
  local record = fresh_claim()
  if redis.call('SET', KEYS[1], record, 'NX', 'PX', ttl_ms) then
    return {'claimed', record}
  end
end
local current = redis.call('GET', KEYS[1])
if not current then return {'absent', ''} end
local record = cjson.decode(current)
if record.state == 'released' then
  -- A tombstone: the claim of record.owner was given up before it landed.
  if mode == 'claim' and record.owner == owner then
    return {'released', ''}  -- that very claim, arriving late: do nothing
  end
  if mode == 'claim' then return claim_afresh() end
  return {'absent', ''}
end
if mode == 'claim' and owner ~= '' and record.owner == owner
    and record.state == 'pending' then
  -- This very claim, run again (redis-py retried the command after a lost
  -- reply): it is ours.
  return {'claimed', current}
end
if record.state == 'pending' and tonumber(record.lease_until) <= now then
  if record.phase == 'claimed' then
    -- Its worker stopped (or waited past its lease) before writing
    -- anything: nothing was sent, the key is free. (If that worker is
    -- still alive, its mark finds another owner and it sends nothing.)
    if mode == 'claim' then return claim_afresh() end
    return {'absent', ''}
  end
  record.state = 'unknown'
  record.reason = 'the attempt holding the key did not finish within its lease '
    .. '(its worker may have stopped mid-send)'
  record.updated_at = fmt(now)
  current = cjson.encode(record)
  redis.call('SET', KEYS[1], current, 'KEEPTTL')
end
if mode == 'claim' and give_up and record.state == 'unknown'
    and tonumber(record.updated_at) + give_up <= now then
  -- The caller accepts the risk: no callback settled it in time.
  return claim_afresh()
end
return {'exists', current}
