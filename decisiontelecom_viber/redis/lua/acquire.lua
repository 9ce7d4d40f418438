-- Reserve up to ARGV[11] send slots no further than ARGV[12] seconds ahead
-- (GCRA: `tat` is the theoretical arrival time of the next request) for
-- worker ARGV[13], ARGV[14] of whose callers are high-priority. While any
-- other worker has high-priority callers waiting for a slot, only this
-- worker's high-priority callers get slots; a worker whose high-priority
-- callers get none registers them (until it asks again, or a grace period
-- after: a stopped worker's registration lapses). While callers wait, an
-- adaptive rate grows: doubling while the limit is unknown (slow start),
-- climbing back to the measured limit, then probing above it after a quiet
-- spell. Replies {now, retry_in, rate, estimate, paused_until, registered,
-- high elsewhere, slot...}; no slot means "ask again in retry_in seconds".
-- (Runs after limiter_prelude.lua.)
local want = tonumber(ARGV[11])
local horizon = tonumber(ARGV[12])
local worker = ARGV[13]
local want_high = math.min(tonumber(ARGV[14]), want)
-- A stopped worker's registration lapses after this long.
local HIGH_GRACE = K.high_grace
-- After the first 429 of slow start, the rate is held this long without a
-- 429 (the measurement would have come) before slow start resumes.
local HOLD = K.hold
-- Slow start doubles the rate every RAMP_STEP while callers wait: slower
-- than one process alone could, since 429s reach every worker later than
-- they reach one. Resumed after a hold, it grows by a quarter a step: the
-- limit is near.
local RAMP_STEP = K.ramp_step

local high_elsewhere = 0
for id, expiry in pairs(high) do
  if expiry <= now then
    redis.call('HDEL', key, 'hi:' .. id)
  elseif id ~= worker then
    high_elsewhere = high_elsewhere + 1
  end
end
local allowed = want
if high_elsewhere > 0 then allowed = want_high end

if want > 0 and adaptive then
  local feedback_time = 2 * rtt
  local step = math.max(K.interval, feedback_time)
  -- Only while callers wait on the limiter (otherwise a higher rate is
  -- untested), and once the answers tell the last change's effect.
  if now - s.last_wait <= step then
    if s.ramping == 2 and tested(s.last_refusal, HOLD) then
      s.ramping = 1  -- no 429 at the held rate: below the limit
    end
    if s.ramping == 1 then
      if tested(s.last_change, math.max(RAMP_STEP, feedback_time)) then
        if s.empty_at then
          set_rate(s.rate * K.search)
        else
          set_rate(s.rate * K.ramp)
        end
      end
    elseif s.ramping == 0 and tested(s.last_change, step) then
      if s.estimate and s.rate < s.estimate * (1 - headroom) then
        set_rate(math.min(s.rate * K.climb, s.estimate * (1 - headroom)))
      elseif now - s.last_refusal >= K.quiet and s.rate < cap then
        set_rate(s.rate * K.probe)
      end
    end
  end
end

local interval = 1 / s.rate
local tolerance = (burst - 1) * interval
local start = math.max(now, s.paused_until)
local reply = {}
for i = 1, allowed do
  local slot = math.max(start, s.tat - tolerance)
  if slot > now then s.last_wait = now end
  if slot - now > horizon then break end
  s.tat = math.max(s.tat, slot) + interval
  s.last_slot = math.max(s.last_slot, slot)
  reply[#reply + 1] = fmt(slot)
end
local retry_in = 0
if #reply == 0 and want > 0 then
  local slot = math.max(start, s.tat - tolerance)
  retry_in = math.max(0, slot - now - horizon)
  if allowed == 0 then
    -- Held back for another worker's high-priority callers: ask again just
    -- after they can have their slots.
    s.last_wait = now
    retry_in = retry_in + horizon * K.held_back_retry
  end
end
local registered = '0'
if want_high > #reply then
  redis.call('HSET', key, 'hi:' .. worker, fmt(now + retry_in + HIGH_GRACE))
  registered = '1'
elseif high[worker] then
  redis.call('HDEL', key, 'hi:' .. worker)
end
save()
local head = {fmt(now), fmt(retry_in), fmt(s.rate), opt(s.estimate),
  fmt(s.paused_until), registered, tostring(high_elsewhere)}
for _, slot in ipairs(reply) do head[#head + 1] = slot end
return head
