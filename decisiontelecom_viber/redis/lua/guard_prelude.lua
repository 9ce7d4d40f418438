-- Shared by the guard's scripts (prepended to each): the clock (ARGV[1], or
-- Redis's TIME when ''), and record times as text with microseconds.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
