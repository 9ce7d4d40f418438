-- Shared by the limiter scripts (prepended to each): read the clock and the
-- arguments, load the state (initialising it when absent or configured
-- differently), and the helpers that change and save it.
--
-- ARGV[1] now ('' for Redis's TIME), [2] rate ('' if unknown), [3] burst,
-- [4] adaptive ('1'/'0'), [5] initial rate, [6] headroom, [7] state TTL ms,
-- [8] accepted answers, [9] round trip, [10] tuning constants (JSON).
-- Each script's own arguments start at ARGV[11].
local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local cfg_rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local adaptive = ARGV[4] == '1'
local initial_rate = tonumber(ARGV[5])
local headroom = tonumber(ARGV[6])
local ttl_ms = tonumber(ARGV[7])
-- Accepted answers: '<count>' of unknown time; or '<count>;<times>;<sent>'
-- with the times the others came (comma-separated) and the latest time one
-- of them was sent ('' if none).
local accepted_parts = {}
for part in string.gmatch(ARGV[8] .. ';', '([^;]*);') do
  accepted_parts[#accepted_parts + 1] = part
end
local accepted_delta = tonumber(accepted_parts[1])
local accepted_times = {}
for t in string.gmatch(accepted_parts[2] or '', '[^,]+') do
  accepted_times[#accepted_times + 1] = tonumber(t)
end
local acked = tonumber(accepted_parts[3] or '')
local rtt = tonumber(ARGV[9])
local config = ARGV[2] .. '/' .. ARGV[3] .. '/' .. ARGV[4] .. '/' .. ARGV[5]
  .. '/' .. ARGV[6]

-- The tuning constants (ARGV[10], a JSON object), named in Python: those
-- of the in-process AdaptiveLimiter, imported from where it names them, and
-- the Redis-only ones (`_lua.LIMITER_TUNING`).
local K = cjson.decode(ARGV[10])
local MAX_RATE = K.max_rate
local MIN_RATE = K.min_rate
-- Shortest time between two "bucket empty" moments used to measure the
-- server's rate: shorter baselines are too noisy.
local MIN_SAMPLE = K.min_sample
-- A configured rate is the account's limit, a ceiling: paced `headroom`
-- below it when adaptive, exactly at it when fixed.
local cap = MAX_RATE
if cfg_rate then
  if adaptive then cap = cfg_rate * (1 - headroom) else cap = cfg_rate end
end

local function fmt(x) return string.format('%.17g', x) end

-- ramping: 1 while the limit is unknown and the rate doubles (slow start);
-- 2 after the first 429 of slow start, holding the rate until a measurement;
-- 0 once measured (or configured).
-- acked: the latest send time of a request known to be accepted.
-- prior_rate: the rate before the latest change (at last_change).
local NAMES = {'rate', 'estimate', 'tat', 'paused_until', 'changed_at',
  'last_change', 'last_refusal', 'last_wait', 'ramping', 'empty_at',
  'accepted', 'pauses', 'refusals', 'last_slot', 'acked', 'prior_rate'}
local raw = redis.call('HGETALL', key)
local fields = {}
for i = 1, #raw, 2 do fields[raw[i]] = raw[i + 1] end
local s = {}
for _, name in ipairs(NAMES) do
  if fields[name] then s[name] = tonumber(fields[name]) end
end
-- Workers with high-priority callers that got no slot yet: 'hi:' .. worker
-- = the Redis time their registration lapses (unless renewed).
local high = {}
for name, value in pairs(fields) do
  if string.sub(name, 1, 3) == 'hi:' then
    high[string.sub(name, 4)] = tonumber(value)
  end
end
if fields.config ~= config or not s.rate then
  -- First use, or a new configuration: start afresh.
  redis.call('DEL', key)
  high = {}
  s = {tat = 0, paused_until = 0, changed_at = now, last_change = now,
    last_refusal = now, last_wait = 0, accepted = 0, pauses = 0, refusals = 0,
    last_slot = 0}
  if cfg_rate then
    s.rate = cap
    s.estimate = cfg_rate
    s.ramping = 0
  else
    s.rate = initial_rate
    s.ramping = 1
  end
end
-- Counted towards the measurement: answers that came since the server's
-- bucket was last seen empty (those that came before spent tokens made
-- before).
local function count_since(moment)
  local n = 0
  for _, t in ipairs(accepted_times) do
    if not moment or t >= moment then n = n + 1 end
  end
  return n
end
s.accepted = s.accepted + accepted_delta + count_since(s.empty_at)
if acked and acked > (s.acked or 0) then s.acked = acked end

-- Whether requests sent for *span* seconds from *since* on were accepted: the
-- answers tell the effect of what was decided at *since* (however late
-- they come, say from a slow server).
local function tested(since, span)
  return s.acked ~= nil and s.acked >= since + span
end

-- A new rate keeps the bucket as full as it was: the backlog of the GCRA
-- (tat beyond now, or beyond the pause) is the same number of tokens at the
-- new rate, so a change never grants a new burst.
local function set_rate(new_rate)
  new_rate = math.max(math.min(new_rate, cap), MIN_RATE)
  local start = math.max(now, s.paused_until)
  if s.tat > start then
    s.tat = start + (s.tat - start) * s.rate / new_rate
  end
  s.prior_rate = s.rate
  s.rate = new_rate
  s.last_change = now
end

local function save()
  local values = {'config', config}
  local gone = {}
  for _, name in ipairs(NAMES) do
    if s[name] then
      values[#values + 1] = name
      values[#values + 1] = fmt(s[name])
    else
      gone[#gone + 1] = name
    end
  end
  redis.call('HSET', key, unpack(values))
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  redis.call('PEXPIRE', key, ttl_ms)
end

local function opt(x)
  if x then return fmt(x) end
  return ''
end
