-- tollway-budget's ledger in Redis: one script, one operation per call, atomic by construction.
-- Only commands of Redis 5.0 and earlier are used (no PEXPIRETIME, no SET PXAT).
--
-- KEYS: 1 reserved (credits held by live leases), 2 leases (sorted set: "instance-id:cost" scored
-- by expiry), 3 latch (its value: when it was set, in microseconds of Redis time), 4 balance,
-- 5 epoch, then one key per limit.
-- ARGV: 1 operation, 2 number of limits n, 3 the epoch the client expects ('0': none, adopt or
-- create one), 4 a new epoch to create if there is none, 5 how long the epoch outlives the last
-- call in milliseconds (-1: forever), then four per limit: kind ('c' calendar, 'r' rolling,
-- 'l' lifetime), limit, a, b (calendar: period start and end; rolling: length and bucket width;
-- in milliseconds since the epoch), then the operation's own arguments.
-- Every reply is a list of integers: a status, Redis's time in milliseconds, the epoch, then the
-- operation's values. Status -1 means a calendar period sent by the client does not hold Redis's
-- time: the client recomputes it from the time returned and calls again. Status -2 means the
-- fleet's state vanished: the epoch the client expects is gone (Redis restarted without
-- persistence, or the keys were deleted) or was replaced; nothing was read or written.

local BUCKETS = 60
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Microseconds: orders a grant against a latch set in the same millisecond.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local n = tonumber(ARGV[2])
local base = 6 + 4 * n

-- The epoch: written when the fleet's state is created, so that a fleet whose state vanished is
-- refused instead of silently counting from zero again.
local epoch = redis.call('GET', KEYS[5])
local expected = ARGV[3]
if not epoch then
  if expected ~= '0' then
    return { -2, now, 0 }
  end
  epoch = ARGV[4]
  redis.call('SET', KEYS[5], epoch)
elseif expected ~= '0' and epoch ~= expected then
  return { -2, now, tonumber(epoch) }
end
local epoch_ttl = tonumber(ARGV[5])
if epoch_ttl >= 0 then
  redis.call('PEXPIRE', KEYS[5], math.max(1, epoch_ttl))
end
epoch = tonumber(epoch)

-- Numbers leave Lua as exact decimal integers, never in exponent notation.
local function int(x)
  return string.format('%d', x)
end

local limits = {}
for i = 1, n do
  local o = 6 + 4 * (i - 1)
  limits[i] = {
    kind = ARGV[o],
    limit = tonumber(ARGV[o + 1]),
    a = tonumber(ARGV[o + 2]),
    b = tonumber(ARGV[o + 3]),
    key = KEYS[5 + i],
  }
  if limits[i].kind == 'c' and (now < limits[i].a or now >= limits[i].b) then
    return { -1, now, epoch }
  end
end

-- Spend still inside the window; drops rolling buckets that left it.
local function spent(w)
  if w.kind == 'r' then
    local current = math.floor(now / w.b)
    local fields = redis.call('HGETALL', w.key)
    local total = 0
    for j = 1, #fields, 2 do
      if current - tonumber(fields[j]) > BUCKETS then
        redis.call('HDEL', w.key, fields[j])
      else
        total = total + tonumber(fields[j + 1])
      end
    end
    return total
  end
  return tonumber(redis.call('GET', w.key) or '0')
end

local function charge(amount)
  if amount <= 0 then
    return
  end
  for i = 1, n do
    local w = limits[i]
    if w.kind == 'c' then
      redis.call('INCRBY', w.key, int(amount))
      redis.call('PEXPIREAT', w.key, int(w.b))
    elseif w.kind == 'r' then
      local current = math.floor(now / w.b)
      redis.call('HINCRBY', w.key, int(current), int(amount))
      redis.call('PEXPIREAT', w.key, int((current + BUCKETS + 1) * w.b))
    else
      redis.call('INCRBY', w.key, int(amount))
    end
  end
  local balance = redis.call('GET', KEYS[4])
  if balance then
    local left = tonumber(balance) - amount
    if left < 0 then
      left = 0
    end
    redis.call('SET', KEYS[4], int(left))
  end
end

local function release(amount)
  if amount > 0 and redis.call('DECRBY', KEYS[1], int(amount)) <= 0 then
    redis.call('DEL', KEYS[1])
  end
end

-- Milliseconds until `needed` credit leaves window `w`, or -1 if it never does.
local function free_in(w, needed)
  if w.kind == 'c' then
    return w.b - now
  elseif w.kind == 'r' then
    local fields = redis.call('HGETALL', w.key)
    local buckets = {}
    for j = 1, #fields, 2 do
      buckets[#buckets + 1] = { tonumber(fields[j]), tonumber(fields[j + 1]) }
    end
    table.sort(buckets, function(x, y) return x[1] < y[1] end)
    local freed = 0
    for _, bucket in ipairs(buckets) do
      freed = freed + bucket[2]
      if freed >= needed then
        return math.max(0, (bucket[1] + BUCKETS + 1) * w.b - now)
      end
    end
  end
  return -1
end

-- Latches until the earliest window rolls over; returns that time, or -1 if none ever does.
local function latch()
  local until_ms = nil
  for i = 1, n do
    local w = limits[i]
    local at = nil
    if w.kind == 'c' then
      at = w.b
    elseif w.kind == 'r' then
      at = now + w.a
    end
    if at ~= nil and (until_ms == nil or at < until_ms) then
      until_ms = at
    end
  end
  redis.call('SET', KEYS[3], int(now_us))
  if until_ms ~= nil then
    redis.call('PEXPIREAT', KEYS[3], int(until_ms))
  end
  return until_ms or -1
end

-- The upstream balance, read now: lifts the latch above zero.
local function sync(balance)
  redis.call('SET', KEYS[4], int(balance))
  if balance > 0 then
    redis.call('DEL', KEYS[3])
  end
end

-- When `key` expires, in milliseconds of Redis time: -1 never, -2 no such key.
local function expires_at(key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    return ttl
  end
  return now + ttl
end

-- Leases past their expiry belong to workers that died or hung: they count as spent, in full.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', int(now))
if #expired > 0 then
  local total = 0
  for j = 1, #expired do
    total = total + tonumber(string.match(expired[j], ':(%d+)$'))
    redis.call('ZREM', KEYS[2], expired[j])
  end
  release(total)
  charge(total)
end

if op == 'reserve' then
  local cost = tonumber(ARGV[base])
  local floor = tonumber(ARGV[base + 1])
  local lease_ms = tonumber(ARGV[base + 2])
  local member = ARGV[base + 3]
  local latch = redis.call('PTTL', KEYS[3])
  if latch ~= -2 then
    return { 1, now, epoch, latch }
  end
  local reserved = tonumber(redis.call('GET', KEYS[1]) or '0')
  local best, reason, binding = nil, 1, 0
  for i = 1, n do
    local left = math.max(0, limits[i].limit - spent(limits[i]) - reserved)
    if best == nil or left < best then
      best, reason, binding = left, 1, i
    end
  end
  local balance = redis.call('GET', KEYS[4])
  if balance then
    local left = math.max(0, tonumber(balance) - reserved)
    if best == nil or left < best then
      best, reason, binding = left, 3, 0
    end
  end
  if best ~= nil and best < cost + floor then
    if best >= cost then
      reason = 2
    end
    local wait = -1
    if binding > 0 then
      wait = free_in(limits[binding], cost + floor - best)
    end
    return { 2, now, epoch, reason, wait }
  end
  redis.call('ZADD', KEYS[2], int(now + lease_ms), member)
  redis.call('INCRBY', KEYS[1], int(cost))
  -- Leases of a fleet that went away entirely expire with their bookkeeping, once charging them
  -- could no longer matter to any window (never, with a lifetime limit).
  local grace = tonumber(ARGV[base + 4])
  if grace >= 0 then
    local at = now + lease_ms + grace
    for k = 1, 2 do
      local current = expires_at(KEYS[k])
      if current ~= -2 and (current == -1 or current < at) then
        redis.call('PEXPIREAT', KEYS[k], int(at))
      end
    end
  end
  return { 0, now, epoch, now_us }
elseif op == 'finish' then
  -- Settle or refund a lease, sync the balance the response reported and latch on a 402, in
  -- one step: no reservation can slip in between the refund and the latch.
  local member = ARGV[base]
  local cost = tonumber(ARGV[base + 1])
  local amount = tonumber(ARGV[base + 2])
  local balance = tonumber(ARGV[base + 3])
  local stamp = tonumber(ARGV[base + 4])
  local latching = ARGV[base + 5] == '1'
  local status = 0
  if redis.call('ZREM', KEYS[2], member) == 1 then
    release(cost)
    charge(amount)
  else
    -- The lease expired and its full cost was charged already: only a charge above it is new.
    charge(amount - cost)
    status = 3
  end
  if balance >= 0 then
    -- A balance read before the latch was set says nothing about the account after the 402.
    local latched_at = redis.call('GET', KEYS[3])
    if not latched_at or stamp > tonumber(latched_at) then
      sync(balance)
    end
  end
  local until_ms = -1
  if latching then
    until_ms = latch()
  end
  return { status, now, epoch, until_ms }
elseif op == 'latch' then
  return { 0, now, epoch, latch() }
elseif op == 'reset' then
  redis.call('DEL', KEYS[3])
  return { 0, now, epoch }
elseif op == 'sync' then
  sync(tonumber(ARGV[base]))
  return { 0, now, epoch }
elseif op == 'snapshot' then
  local reply = { 0, now, epoch }
  reply[4] = tonumber(redis.call('GET', KEYS[1]) or '0')
  reply[5] = tonumber(redis.call('GET', KEYS[4]) or '-1')
  reply[6] = redis.call('PTTL', KEYS[3])
  for i = 1, n do
    local w = limits[i]
    reply[#reply + 1] = spent(w)
    local resets = -1
    if w.kind == 'c' then
      resets = w.b - now
    elseif w.kind == 'r' then
      local oldest = nil
      local fields = redis.call('HKEYS', w.key)
      for j = 1, #fields do
        local index = tonumber(fields[j])
        if oldest == nil or index < oldest then
          oldest = index
        end
      end
      if oldest ~= nil then
        resets = math.max(0, (oldest + BUCKETS + 1) * w.b - now)
      end
    end
    reply[#reply + 1] = resets
  end
  return reply
end
return redis.error_reply('tollway-budget: unknown operation ' .. tostring(op))
