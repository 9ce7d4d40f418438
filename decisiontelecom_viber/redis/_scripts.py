"""The Lua scripts, and thin typed wrappers around them.

Every decision about the shared state is taken inside Redis by one script
call, so it is atomic however many workers run. Time is Redis's own
(``TIME``), the one clock every worker on every machine shares; the first
argument of each script may override it, which is how the tests drive the
scripts with a controllable clock.

Numbers cross the Lua boundary as strings (Redis truncates Lua numbers to
integers in replies), formatted with ``%.17g`` so that doubles survive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from redis.asyncio import Redis


__all__ = [
    "AcquireReply",
    "GuardScripts",
    "LimiterParams",
    "LimiterScripts",
    "ReportReply",
    "decode",
]

# -- the rate limiter ----------------------------------------------------------

# Shared by the limiter scripts: read the clock and the arguments, load the
# state (initialising it when absent or configured differently), and the
# helpers that change and save it.
_LIMITER_PRELUDE = """
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

local MAX_RATE = 1000000
local MIN_RATE = 0.01
-- Shortest time between two "bucket empty" moments used to measure the
-- server's rate: shorter baselines are too noisy.
local MIN_SAMPLE = 0.15
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
"""

# Reserve up to ARGV[10] send slots no further than ARGV[11] seconds ahead
# (GCRA: ``tat`` is the theoretical arrival time of the next request) for
# worker ARGV[12], ARGV[13] of whose callers are high-priority. While any
# other worker has high-priority callers waiting for a slot, only this
# worker's high-priority callers get slots; a worker whose high-priority
# callers get none registers them (until it asks again, or a grace period
# after: a stopped worker's registration lapses). While callers wait, an
# adaptive rate grows: doubling while the limit is unknown (slow start),
# climbing back to the measured limit, then probing above it after a quiet
# spell. Replies {now, retry_in, rate, estimate, paused_until, registered,
# high elsewhere, slot...}; no slot means "ask again in retry_in seconds".
ACQUIRE_LUA = (
    _LIMITER_PRELUDE
    + """
local want = tonumber(ARGV[10])
local horizon = tonumber(ARGV[11])
local worker = ARGV[12]
local want_high = math.min(tonumber(ARGV[13]), want)
-- A stopped worker's registration lapses after this long.
local HIGH_GRACE = 0.5
-- After the first 429 of slow start, the rate is held this long without a
-- 429 (the measurement would have come) before slow start resumes.
local HOLD = 2 * MIN_SAMPLE
-- Slow start doubles the rate every RAMP_STEP while callers wait: slower
-- than one process alone could, since 429s reach every worker later than
-- they reach one. Resumed after a hold, it grows by a quarter a step: the
-- limit is near.
local RAMP_STEP = 0.1

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
  local step = math.max(0.1, feedback_time)
  -- Only while callers wait on the limiter (otherwise a higher rate is
  -- untested), and once the answers tell the last change's effect.
  if now - s.last_wait <= step then
    if s.ramping == 2 and tested(s.last_refusal, HOLD) then
      s.ramping = 1  -- no 429 at the held rate: below the limit
    end
    if s.ramping == 1 then
      if tested(s.last_change, math.max(RAMP_STEP, feedback_time)) then
        if s.empty_at then set_rate(s.rate * 1.25) else set_rate(s.rate * 2) end
      end
    elseif s.ramping == 0 and tested(s.last_change, step) then
      if s.estimate and s.rate < s.estimate * (1 - headroom) then
        set_rate(math.min(s.rate * 1.05, s.estimate * (1 - headroom)))
      elseif now - s.last_refusal >= 1.5 and s.rate < cap then
        set_rate(s.rate * 1.05)
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
    retry_in = retry_in + horizon / 4
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
"""
)

# Count accepted answers (ARGV[8]) and nothing else.
FLUSH_LUA = (
    _LIMITER_PRELUDE
    + """
save()
return fmt(now)
"""
)

# A 429: pause every sender, measure the server's rate, decrease the shared
# rate. ARGV[10..15]: sent_at, received_at (Redis time), retry_after ('' if
# the server did not say), max_pause, reserved_at (when its slot was
# reserved), reset (X-Rate-Limit-Reset, '' if absent). Feedback about a
# request whose slot was reserved before the last decrease is stale (it was
# decided at the old rate): it neither pauses nor decreases again, but it
# still says the server's bucket was empty, which measures its rate.
# Replies {now, rate, estimate, paused_until, stale}.
REPORT_LUA = (
    _LIMITER_PRELUDE
    + """
local sent_at = tonumber(ARGV[10])
local received_at = tonumber(ARGV[11])
local retry_after = tonumber(ARGV[12])
local max_pause = tonumber(ARGV[13])
local reserved_at = tonumber(ARGV[14])
local reset = tonumber(ARGV[15])

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
    if s.ramping == 1 then new_rate = rate / 2 else new_rate = rate * 0.75 end
    s.ramping = 2
  elseif s.ramping ~= 0 then
    s.ramping = 0
    new_rate = target
  elseif not target then
    new_rate = rate * 0.7
  elseif rate > target then
    new_rate = target
  else
    -- Refused at or below the measured limit: the limit fell. Believe it.
    s.estimate = estimate * 0.97
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
"""
)


@attrs.frozen(kw_only=True)
class LimiterParams:
    """The configuration every limiter script call carries.

    Workers sharing a key must use the same values: a different
    configuration resets the shared state.
    """

    rate: float | None
    burst: int
    adaptive: bool
    initial_rate: float
    headroom: float
    state_ttl: float

    def args(
        self,
        now: float | None,
        accepted: int | Sequence[float],
        rtt: float,
        acked: float | None = None,
    ) -> list[Any]:
        """ARGV[1..9], shared by the scripts.

        *accepted*: answers that were not 429s since the last call, as a
        count, or as the times they came (Redis time); *acked*: the latest
        time one of them was sent.
        """
        if isinstance(accepted, int):
            counted = f"{accepted};;"
        else:
            counted = "0;" + ",".join(f"{t:.6f}" for t in accepted) + ";"
        if acked is not None:
            counted += f"{acked:.6f}"
        return [
            "" if now is None else repr(now),
            "" if self.rate is None else repr(float(self.rate)),
            str(self.burst),
            "1" if self.adaptive else "0",
            repr(float(self.initial_rate)),
            repr(float(self.headroom)),
            str(max(1, round(self.state_ttl * 1000))),
            counted,
            repr(float(rtt)),
        ]


@attrs.frozen
class AcquireReply:
    """What the acquire script answered (times are Redis unix times).

    Attributes:
        registered: Whether this worker's high-priority callers are
            registered as waiting (some got no slot).
        high_elsewhere: Other workers with high-priority callers waiting:
            while there are any, only high-priority callers get slots.
    """

    now: float
    retry_in: float
    rate: float
    estimate: float | None
    paused_until: float
    slots: tuple[float, ...]
    registered: bool = False
    high_elsewhere: int = 0


@attrs.frozen
class ReportReply:
    """What the report script answered (times are Redis unix times)."""

    now: float
    rate: float
    estimate: float | None
    paused_until: float
    stale: bool


def decode(value: object) -> str:
    """A Redis reply element as text (clients may or may not decode replies)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _optional(value: object) -> float | None:
    text = decode(value)
    return float(text) if text else None


def _optional_arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class LimiterScripts:
    """The limiter's scripts, registered on one Redis client."""

    __slots__ = ("_acquire", "_flush", "_report")

    def __init__(self, redis: Redis) -> None:
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._report = redis.register_script(REPORT_LUA)
        self._flush = redis.register_script(FLUSH_LUA)

    async def acquire(
        self,
        key: str,
        params: LimiterParams,
        *,
        want: int,
        horizon: float,
        worker: str = "",
        high: int = 0,
        accepted: int | Sequence[float] = 0,
        acked: float | None = None,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> AcquireReply:
        """Reserve up to *want* slots at most *horizon* seconds ahead.

        *worker* names the calling worker, *high* of whose *want* callers
        are high-priority (they take the first slots).
        """
        args = [
            *params.args(now, accepted, rtt, acked),
            str(want),
            repr(float(horizon)),
            worker,
            str(high),
        ]
        reply: Sequence[object] = await self._acquire(keys=[key], args=args)
        return AcquireReply(
            float(decode(reply[0])),
            float(decode(reply[1])),
            float(decode(reply[2])),
            _optional(reply[3]),
            float(decode(reply[4])),
            tuple(float(decode(slot)) for slot in reply[7:]),
            registered=decode(reply[5]) == "1",
            high_elsewhere=int(decode(reply[6])),
        )

    async def flush(
        self,
        key: str,
        params: LimiterParams,
        *,
        accepted: int | Sequence[float],
        acked: float | None = None,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> None:
        """Count accepted answers (see `LimiterParams.args`)."""
        await self._flush(keys=[key], args=params.args(now, accepted, rtt, acked))

    async def report(
        self,
        key: str,
        params: LimiterParams,
        *,
        sent_at: float,
        received_at: float,
        retry_after: float | None,
        max_pause: float,
        reserved_at: float | None = None,
        reset: float | None = None,
        accepted: int | Sequence[float] = 0,
        acked: float | None = None,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> ReportReply:
        """Report a 429 for a request sent and answered at these Redis times.

        *reserved_at* is when the request's slot was reserved (defaults to
        *sent_at*): it tells whether the 429 is news or stale. *reset* is
        the answer's ``X-Rate-Limit-Reset``, if it had one.
        """
        args = [
            *params.args(now, accepted, rtt, acked),
            repr(float(sent_at)),
            repr(float(received_at)),
            _optional_arg(retry_after),
            repr(float(max_pause)),
            repr(float(sent_at if reserved_at is None else reserved_at)),
            _optional_arg(reset),
        ]
        reply: Sequence[object] = await self._report(keys=[key], args=args)
        return ReportReply(
            float(decode(reply[0])),
            float(decode(reply[1])),
            _optional(reply[2]),
            float(decode(reply[3])),
            decode(reply[4]) == "1",
        )


# -- the send-once guard -------------------------------------------------------

_GUARD_PRELUDE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
"""

# Claim a dedupe key (ARGV[2] = 'claim') with SET NX and a TTL, or only look
# at it (ARGV[2] = 'peek'). A claim is in phase 'claimed' (waiting to send:
# nothing written) until it is marked 'writing' (MARK_LUA). A claim finding
# its own pending record (same owner: the command was retried) counts as
# claimed. A pending record whose lease ran out (its worker stopped) is free
# again while 'claimed', and becomes 'unknown' once 'writing' (or without a
# phase: written by an older version), keeping its TTL. With ARGV[6] (give
# up after, seconds; '' for never) an unknown record unchanged that long is
# free again too. ARGV[3] owner token, ARGV[4] lease seconds, ARGV[5] TTL
# ms. Replies {'claimed'|'exists'|'absent', record JSON}.
CLAIM_LUA = (
    _GUARD_PRELUDE
    + """
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
"""
)

# Mark owner ARGV[2]'s claim 'writing': its request is about to be written.
# Only the owner's pending record is marked; a record that vanished (a Redis
# restart) is written again. With ARGV[4] = 'unmark', the other way: its
# request was refused for sure and a retry waits ('claimed' again). Replies
# {'ok'|'recreated'|'not_owner', record JSON or ''}.
MARK_LUA = (
    _GUARD_PRELUDE
    + """
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
"""
)

# Settle a claim held by owner ARGV[2]: ARGV[3] is 'sent' (ARGV[4] message
# ID; the TTL starts again, ARGV[6] ms), 'unknown' (ARGV[5] reason) or
# 'release' (the send definitely failed: a tombstone for ARGV[7] ms, which
# later claims of other owners overwrite and late ones of this owner skip).
# A record that vanished is written again ('recreated'). With owner '' the
# record is settled whoever holds it (a person's `resolve`). 'reconcile'
# (a signed status callback: sent as ARGV[4]) settles a pending or unknown
# record whoever holds it ('settled'), and an owner's later settle finds
# it sent: a sent record is never unsent, nor given another ID
# ('conflict'). Replies {'ok'|'recreated'|'not_owner'|'settled'|'conflict'|
# 'absent', record JSON or ''}.
SETTLE_LUA = (
    _GUARD_PRELUDE
    + """
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
"""
)


class GuardScripts:
    """The guard's scripts, registered on one Redis client."""

    __slots__ = ("_claim", "_mark", "_settle")

    def __init__(self, redis: Redis) -> None:
        self._claim = redis.register_script(CLAIM_LUA)
        self._mark = redis.register_script(MARK_LUA)
        self._settle = redis.register_script(SETTLE_LUA)

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        lease: float,
        ttl: float,
        peek: bool = False,
        give_up_after: float | None = None,
        now: float | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Claim *key* (or only look at it); return (verdict, record)."""
        args = [
            "" if now is None else repr(now),
            "peek" if peek else "claim",
            owner,
            repr(float(lease)),
            str(max(1, round(ttl * 1000))),
            _optional_arg(give_up_after),
        ]
        reply: Sequence[object] = await self._claim(keys=[key], args=args)
        return decode(reply[0]), _record(reply[1])

    async def mark(
        self,
        key: str,
        *,
        owner: str,
        ttl: float,
        unmark: bool = False,
        now: float | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Mark *owner*'s claim of *key* as being written (or, *unmark*, not)."""
        args = [
            "" if now is None else repr(now),
            owner,
            str(max(1, round(ttl * 1000))),
            "unmark" if unmark else "mark",
        ]
        reply: Sequence[object] = await self._mark(keys=[key], args=args)
        return decode(reply[0]), _record(reply[1])

    async def settle(
        self,
        key: str,
        *,
        owner: str,
        action: str,
        message_id: int | None = None,
        reason: str = "",
        ttl: float,
        tombstone: float = 0.001,
        now: float | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Settle *key*: ``sent``, ``unknown``, ``release`` or ``reconcile``."""
        args = [
            "" if now is None else repr(now),
            owner,
            action,
            "" if message_id is None else str(message_id),
            reason,
            str(max(1, round(ttl * 1000))),
            str(max(1, round(tombstone * 1000))),
        ]
        reply: Sequence[object] = await self._settle(keys=[key], args=args)
        return decode(reply[0]), _record(reply[1])


def _record(value: object) -> dict[str, Any] | None:
    text = decode(value)
    if not text:
        return None
    record: dict[str, Any] = json.loads(text)
    return record
