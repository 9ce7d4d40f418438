-- A 429: pause every sender, measure the server's rate, decrease the shared
-- rate. ARGV[11..16]: sent_at, received_at (Redis time), retry_after ('' if
-- the server did not say), max_pause, reserved_at (when its slot was
-- reserved), reset (X-Rate-Limit-Reset, '' if absent). Feedback about a
-- request whose slot was reserved before the last decrease is stale (it was
-- decided at the old rate): it neither pauses nor decreases again, but it
-- still says the server's bucket was empty, which measures its rate.
-- Replies {now, rate, estimate, paused_until, stale}.
-- (Runs after limiter_prelude.lua.)
local sent_at = tonumber(ARGV[11])
local received_at = tonumber(ARGV[12])
local retry_after = tonumber(ARGV[13])
local max_pause = tonumber(ARGV[14])
local reserved_at = tonumber(ARGV[15])
local reset = tonumber(ARGV[16])

s.refusals = s.refusals + 1
local stale = reserved_at <= s.changed_at
-- Every token the server made since its bucket was last seen empty went to
-- an accepted request: a lower bound of its rate (exact when the bucket
-- stayed empty in between). Moments are when answers came, the refusal's
-- and the accepted ones' (reports and counts reach Redis in any order).
local sampled = false
if not s.empty_at then
  s.empty_at = received_at
  s.accepted = count_since(received_at)
elseif received_at - s.empty_at >= MIN_SAMPLE then
  local sample = (s.accepted - count_since(received_at))
    / (received_at - s.empty_at)
  s.empty_at = received_at
  s.accepted = count_since(received_at)
  if sample > (s.estimate or 0) then s.estimate = sample end
  sampled = true
end

if adaptive and (not stale or (sampled and s.ramping ~= 0)) then
  local rate, estimate = s.rate, s.estimate
  local target = nil
  if estimate then target = estimate * (1 - headroom) end
  local new_rate
  if s.ramping ~= 0 and not target then
    -- Not measured yet: halve the rate at the first 429 of slow start, a
    -- quarter less at the next ones (the limit is near), and hold it, so
    -- that the next 429s measure the server's rate. Halve the rate the
    -- refused request was sent at: the rate may have doubled again before
    -- its 429 came (answers come late from a busy server).
    if s.prior_rate and reserved_at < s.last_change then
      rate = math.min(rate, s.prior_rate)
    end
    if s.ramping == 1 then
      new_rate = rate / K.ramp
    else
      new_rate = rate * K.near_decrease
    end
    s.ramping = 2
  elseif s.ramping ~= 0 then
    s.ramping = 0
    new_rate = target
  elseif not target then
    new_rate = rate * K.blind_decrease
  elseif rate > target then
    new_rate = target
  else
    -- Refused at or below the measured limit: the limit fell. Believe it.
    s.estimate = estimate * K.decrease
    new_rate = s.estimate * (1 - headroom)
  end
  set_rate(new_rate)
  s.changed_at = now
  s.last_refusal = now
end

if not stale then
  -- The server's bucket is empty: wait as long as it says (Retry-After),
  -- else one interval at the new rate after the slots already granted
  -- (they will spend the tokens it makes meanwhile); X-Rate-Limit-Reset is
  -- only an upper bound of that wait.
  local pause = math.max(now, s.last_slot) + 1 / s.rate - now
  if reset then pause = math.min(pause, reset + 1) end
  if retry_after then pause = math.max(pause, retry_after) end
  local paused_until = now + math.min(pause, max_pause)
  if paused_until > s.paused_until then
    s.paused_until = paused_until
    s.pauses = s.pauses + 1
  end
  -- The server's bucket is empty: no burst when the pause ends.
  s.tat = math.max(s.tat, s.paused_until + (burst - 1) / s.rate)
end
save()
local flag = '0'
if stale then flag = '1' end
return {fmt(now), fmt(s.rate), opt(s.estimate), fmt(s.paused_until), flag}
