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

# Shared by both limiter scripts: read the clock and the arguments, load the
# state (initialising it when absent or configured differently), and save it.
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
local accepted_delta = tonumber(ARGV[8])
local rtt = tonumber(ARGV[9])
local config = ARGV[2] .. '/' .. ARGV[3] .. '/' .. ARGV[4] .. '/' .. ARGV[5]
  .. '/' .. ARGV[6]

local MAX_RATE = 1000000
local MIN_RATE = 0.01
local cap = MAX_RATE
if cfg_rate then cap = cfg_rate * (1 - headroom) end

local function fmt(x) return string.format('%.17g', x) end

local NAMES = {'rate', 'estimate', 'tat', 'paused_until', 'changed_at',
  'last_change', 'last_refusal', 'last_wait', 'ramping', 'empty_at',
  'accepted', 'pauses', 'refusals', 'last_slot'}
local raw = redis.call('HMGET', key, 'config', unpack(NAMES))
local s = {}
for i, name in ipairs(NAMES) do
  local value = raw[i + 1]
  if value then s[name] = tonumber(value) end
end
if raw[1] ~= config or not s.rate then
  -- First use, or a new configuration: start afresh.
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
s.accepted = s.accepted + accepted_delta

local function save()
  local fields = {'config', config}
  for _, name in ipairs(NAMES) do
    if s[name] then
      fields[#fields + 1] = name
      fields[#fields + 1] = fmt(s[name])
    end
  end
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, ttl_ms)
end

local function opt(x)
  if x then return fmt(x) end
  return ''
end
"""

# Reserve up to ARGV[10] send slots no further than ARGV[11] seconds ahead
# (GCRA: ``tat`` is the theoretical arrival time of the next request).
# While callers wait, an adaptive rate grows: doubling while the limit is
# unknown (slow start), climbing back to the measured limit, then probing
# above it after a quiet spell. Replies {now, retry_in, rate, estimate,
# paused_until, slot...}; no slot means "ask again in retry_in seconds".
ACQUIRE_LUA = (
    _LIMITER_PRELUDE
    + """
local want = tonumber(ARGV[10])
local horizon = tonumber(ARGV[11])

if want > 0 and adaptive then
  local feedback_time = 2 * rtt
  local step = math.max(0.1, feedback_time)
  local since = now - s.last_change
  -- Only while callers wait on the limiter: otherwise a higher rate is untested.
  if now - s.last_wait <= step then
    if s.ramping == 1 then
      if since >= math.max(0.05, feedback_time) then
        s.rate = math.min(s.rate * 2, cap)
        s.last_change = now
      end
    elseif since >= step then
      if s.estimate and s.rate < s.estimate * (1 - headroom) then
        s.rate = math.min(s.rate * 1.05, s.estimate * (1 - headroom), cap)
        s.last_change = now
      elseif now - s.last_refusal >= 1.5 and s.rate < cap then
        s.rate = math.min(s.rate * 1.05, cap)
        s.last_change = now
      end
    end
  end
end

local interval = 1 / s.rate
local tolerance = (burst - 1) * interval
local start = math.max(now, s.paused_until)
local reply = {}
local retry_in = 0
for i = 1, want do
  local slot = math.max(start, s.tat - tolerance)
  if slot > now then s.last_wait = now end
  if slot - now > horizon then
    if i == 1 then retry_in = slot - now - horizon end
    break
  end
  s.tat = math.max(s.tat, slot) + interval
  s.last_slot = math.max(s.last_slot, slot)
  reply[#reply + 1] = fmt(slot)
end
save()
local head = {fmt(now), fmt(retry_in), fmt(s.rate), opt(s.estimate),
  fmt(s.paused_until)}
for _, slot in ipairs(reply) do head[#head + 1] = slot end
return head
"""
)

# A 429: pause every sender, measure the server's rate, decrease the shared
# rate. ARGV[10..14]: sent_at, received_at (Redis time), retry_after ('' if
# the server did not say), max_pause, reserved_at (when its slot was
# reserved). Feedback about a request whose slot was reserved before the
# last decrease is stale (it was decided at the old rate) and only counted.
# Replies {now, rate, estimate, paused_until, stale}.
REPORT_LUA = (
    _LIMITER_PRELUDE
    + """
local sent_at = tonumber(ARGV[10])
local received_at = tonumber(ARGV[11])
local retry_after = tonumber(ARGV[12])
local max_pause = tonumber(ARGV[13])
local reserved_at = tonumber(ARGV[14])

s.refusals = s.refusals + 1
local stale = reserved_at <= s.changed_at
if not stale then
  -- Every token the server made since its bucket was last seen empty went
  -- to an accepted request: a lower bound of its rate.
  local moment = (sent_at + received_at) / 2
  if not s.empty_at then
    s.empty_at = moment
    s.accepted = 0
  elseif moment - s.empty_at >= 0.15 then
    local sample = s.accepted / (moment - s.empty_at)
    s.empty_at = moment
    s.accepted = 0
    if sample > (s.estimate or 0) then s.estimate = sample end
  end

  if adaptive then
    local rate, estimate = s.rate, s.estimate
    local target = nil
    if estimate then target = estimate * (1 - headroom) end
    local new_rate
    if s.ramping == 1 and not target then
      -- Not measured yet (the first 429, or too soon after it): halve and
      -- keep ramping. Halving from above the limit keeps the server's
      -- bucket empty, so that the next 429 measures its rate.
      new_rate = rate / 2
    elseif s.ramping == 1 then
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
    s.rate = math.max(math.min(new_rate, cap), MIN_RATE)
    s.changed_at = now
    s.last_change = now
    s.last_refusal = now
  end

  -- The server's bucket is empty: wait as long as it says, else one
  -- interval at the new rate after the slots already granted at the old
  -- one (they will spend the tokens it makes meanwhile).
  local resume = math.max(now + (retry_after or 0), s.last_slot + 1 / s.rate)
  local paused_until = math.min(resume, now + max_pause)
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

    def args(self, now: float | None, accepted: int, rtt: float) -> list[Any]:
        """ARGV[1..9], shared by both scripts."""
        return [
            "" if now is None else repr(now),
            "" if self.rate is None else repr(float(self.rate)),
            str(self.burst),
            "1" if self.adaptive else "0",
            repr(float(self.initial_rate)),
            repr(float(self.headroom)),
            str(max(1, round(self.state_ttl * 1000))),
            str(accepted),
            repr(float(rtt)),
        ]


@attrs.frozen
class AcquireReply:
    """What the acquire script answered (times are Redis unix times)."""

    now: float
    retry_in: float
    rate: float
    estimate: float | None
    paused_until: float
    slots: tuple[float, ...]


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


class LimiterScripts:
    """The limiter's scripts, registered on one Redis client."""

    __slots__ = ("_acquire", "_report")

    def __init__(self, redis: Redis) -> None:
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._report = redis.register_script(REPORT_LUA)

    async def acquire(
        self,
        key: str,
        params: LimiterParams,
        *,
        want: int,
        horizon: float,
        accepted: int = 0,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> AcquireReply:
        """Reserve up to *want* slots at most *horizon* seconds ahead."""
        args = [*params.args(now, accepted, rtt), str(want), repr(float(horizon))]
        reply: Sequence[object] = await self._acquire(keys=[key], args=args)
        return AcquireReply(
            float(decode(reply[0])),
            float(decode(reply[1])),
            float(decode(reply[2])),
            _optional(reply[3]),
            float(decode(reply[4])),
            tuple(float(decode(slot)) for slot in reply[5:]),
        )

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
        accepted: int = 0,
        rtt: float = 0.0,
        now: float | None = None,
    ) -> ReportReply:
        """Report a 429 for a request sent and answered at these Redis times.

        *reserved_at* is when the request's slot was reserved (defaults to
        *sent_at*): it tells whether the 429 is news or stale.
        """
        args = [
            *params.args(now, accepted, rtt),
            repr(float(sent_at)),
            repr(float(received_at)),
            "" if retry_after is None else repr(float(retry_after)),
            repr(float(max_pause)),
            repr(float(sent_at if reserved_at is None else reserved_at)),
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
# at it (ARGV[2] = 'peek'). A claim finding its own pending record (same
# owner: the command was retried) counts as claimed. A pending record whose
# lease ran out (its worker stopped mid-send) becomes 'unknown', keeping its
# TTL. ARGV[3] owner token,
# ARGV[4] lease seconds, ARGV[5] TTL ms. Replies {'claimed'|'exists'|'absent',
# record JSON}.
CLAIM_LUA = (
    _GUARD_PRELUDE
    + """
local mode, owner = ARGV[2], ARGV[3]
local lease, ttl_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
if mode == 'claim' then
  local record = cjson.encode({state = 'pending', owner = owner,
    claimed_at = fmt(now), updated_at = fmt(now), lease_until = fmt(now + lease)})
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
  if mode == 'claim' then
    local fresh = cjson.encode({state = 'pending', owner = owner,
      claimed_at = fmt(now), updated_at = fmt(now),
      lease_until = fmt(now + lease)})
    redis.call('SET', KEYS[1], fresh, 'PX', ttl_ms)
    return {'claimed', fresh}
  end
  return {'absent', ''}
end
if mode == 'claim' and owner ~= '' and record.owner == owner
    and record.state == 'pending' then
  -- This very claim, run again (redis-py retried the command after a lost
  -- reply): it is ours.
  return {'claimed', current}
end
if record.state == 'pending' and tonumber(record.lease_until) <= now then
  record.state = 'unknown'
  record.reason = 'the attempt holding the key did not finish within its lease '
    .. '(its worker may have stopped mid-send)'
  record.updated_at = fmt(now)
  current = cjson.encode(record)
  redis.call('SET', KEYS[1], current, 'KEEPTTL')
end
return {'exists', current}
"""
)

# Settle a claim held by owner ARGV[2]: ARGV[3] is 'sent' (ARGV[4] message
# ID; the TTL starts again, ARGV[6] ms), 'unknown' (ARGV[5] reason) or
# 'release' (the send definitely failed: a tombstone for ARGV[7] ms, which
# later claims of other owners overwrite and late ones of this owner skip).
# A record that vanished is written again ('recreated'). With owner '' the
# record is settled whoever holds it (reconciliation). Replies {'ok'|
# 'recreated'|'not_owner', record JSON or ''}.
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
    if action == 'release' then return {'ok', ''} end
    current = nil  -- a tombstone counts as no record
  elseif owner ~= '' and record.owner ~= owner then
    return {'not_owner', current}
  end
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

    __slots__ = ("_claim", "_settle")

    def __init__(self, redis: Redis) -> None:
        self._claim = redis.register_script(CLAIM_LUA)
        self._settle = redis.register_script(SETTLE_LUA)

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        lease: float,
        ttl: float,
        peek: bool = False,
        now: float | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Claim *key* (or only look at it); return (verdict, record)."""
        args = [
            "" if now is None else repr(now),
            "peek" if peek else "claim",
            owner,
            repr(float(lease)),
            str(max(1, round(ttl * 1000))),
        ]
        reply: Sequence[object] = await self._claim(keys=[key], args=args)
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
        """Settle *key*: ``sent``, ``unknown`` or ``release``."""
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
