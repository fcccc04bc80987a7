-- tollway-limiter server fleets: one request against every applicable limit of a layer,
-- all-or-nothing, GCRA on Redis's own clock (see the client's script for the arithmetic).
--
-- KEYS[i]  the theoretical arrival time (TAT) of one policy for one client, in microseconds
-- ARGV[1]  the instant (Redis time, microseconds) after which the caller no longer waits for
--          this answer: a script that runs later (Redis was stalled) decides nothing, so a
--          request the caller answered without Redis is never counted here too
-- ARGV[2i], ARGV[2i + 1]  that policy's emission interval in microseconds and its burst
--
-- A request (cost 1) is admitted when every TAT allows it now; then every TAT moves on by one
-- interval and each key expires when its bucket is full again. A refusal writes nothing.
--
-- Returns { admitted (1 or 0; -1: too late, nothing decided), wait (microseconds until every
-- policy would admit it), now, then for each key after the decision: requests available now,
-- microseconds until the bucket is full, microseconds until one more request is admitted }.

if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = #KEYS
if now > tonumber(ARGV[1]) then
  return { -1, 0, now }
end

local tats, intervals, bursts = {}, {}, {}
local wait = 0
for i = 1, n do
  tats[i] = tonumber(redis.call('GET', KEYS[i])) or now
  intervals[i] = tonumber(ARGV[2 * i])
  bursts[i] = tonumber(ARGV[2 * i + 1])
  local due = tats[i] + (1 - bursts[i]) * intervals[i] - now
  if due > wait then
    wait = due
  end
end

local reply = { 0, math.ceil(wait), now }
if wait <= 0 then
  reply[1] = 1
  for i = 1, n do
    local tat = math.max(tats[i], now) + intervals[i]
    tats[i] = tat
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
end

for i = 1, n do
  local tat = math.max(tats[i], now)
  local available = math.floor((now + bursts[i] * intervals[i] - tat) / intervals[i])
  if available < 0 then
    available = 0
  end
  local next_in = tats[i] + (1 - bursts[i]) * intervals[i] - now
  if next_in < 0 then
    next_in = 0
  end
  reply[#reply + 1] = available
  reply[#reply + 1] = math.ceil(tat - now)
  reply[#reply + 1] = math.ceil(next_in)
end
return reply
