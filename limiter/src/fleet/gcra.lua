-- tollway-limiter fleet mode: GCRA over several quotas, all-or-nothing, on Redis's own clock.
--
-- KEYS[i]  the theoretical arrival time (TAT) of quota i, in microseconds since the Unix epoch
-- ARGV[1]  the operation: 1 admits a request, 2 pauses the fleet
-- ARGV[2]  the cost c of one request (permits)
-- ARGV[3]  how many requests to grant at most (a lease: 1 without leasing)
-- ARGV[4]  the lease's horizon in microseconds: later requests are granted only if due by then;
--          for a pause, its length in microseconds
-- ARGV[2i + 3], ARGV[2i + 4]  quota i's emission interval in microseconds and its burst
--
-- A request of cost c is admitted by quota i at time e when max(tat, e) + c * interval is at
-- most e + burst * interval, that is from e = tat + (c - burst) * interval on; admitting it
-- moves the TAT to max(tat, e) + c * interval. The first request must be due now under every
-- quota, or nothing is written and the reply says how long until it is. Each further request of
-- a lease takes the next due time of the same schedule, as long as it falls within the horizon:
-- a lease is a list of future admission times, never a stock of permits to spend at will. A key
-- expires when its bucket is full again (at its TAT), so idle limiters leave nothing behind.
--
-- Microseconds keep every value below 2^53: Lua numbers are doubles.
--
-- A pause (a 429's Retry-After seen by one process) empties every bucket until now + length:
-- the first request after it is due at its end and the next ones at the steady rate, in every
-- process, as the in-memory limiter's pause does; a later TAT is never brought earlier.
--
-- Returns { 1, 0, now, offset_2, ..., offset_k } when admitted (each further request of the lease
-- is due offset microseconds after now), { 0, wait, now } when refused, where wait (microseconds,
-- rounded up) is how long until every quota would admit the first request.

-- Redis before 5 replicates scripts verbatim: TIME would differ on replicas.
if redis.replicate_commands then
  redis.replicate_commands()
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local op = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local horizon = now + tonumber(ARGV[4])

local tats = {}
local intervals = {}
local bursts = {}
for i = 1, #KEYS do
  tats[i] = tonumber(redis.call('GET', KEYS[i])) or now
  intervals[i] = tonumber(ARGV[2 * i + 3])
  bursts[i] = tonumber(ARGV[2 * i + 4])
end

-- Whatever the quotas, no TAT goes past 2^53 microseconds since the epoch (year 2255): beyond
-- it doubles stop being exact, and a reply past 2^63 would not be an integer at all.
local max_tat = 9007199254740991

local function store()
  for i = 1, #KEYS do
    if tats[i] > max_tat then
      tats[i] = max_tat
    end
    local ttl_ms = math.max(1, math.ceil((tats[i] - now) / 1000))
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl_ms)
  end
end

if op == 2 then
  for i = 1, #KEYS do
    local paused = horizon + (bursts[i] - 1) * intervals[i]
    if paused > tats[i] then
      tats[i] = paused
    end
  end
  store()
  return { 1, 0, now }
end

local reply = { 1, 0, now }
for j = 1, wanted do
  local due = now
  for i = 1, #KEYS do
    local from = tats[i] + (cost - bursts[i]) * intervals[i]
    if from > due then
      due = from
    end
  end
  if j == 1 and due > now then
    return { 0, math.ceil(math.min(due, max_tat) - now), now }
  end
  if due > horizon then
    break
  end
  for i = 1, #KEYS do
    local tat = tats[i]
    if tat < due then
      tat = due
    end
    tats[i] = tat + cost * intervals[i]
  end
  if j > 1 then
    reply[#reply + 1] = math.ceil(due - now)
  end
end

store()
return reply
