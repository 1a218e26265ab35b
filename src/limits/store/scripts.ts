/**
 * Lua scripts of the Redis store. Each runs atomically. A limit instance's keys share a hash tag, so a script on
 * one instance touches one Redis Cluster slot; the batch scripts (ADMIT_ALL, SETTLE_ALL) touch several instances
 * at once and so run only where every key is on one server (standalone, Sentinel). Budget key group: a hash
 * {spent, reserved}, a sorted set reservation id → expiry, a hash reservation id → amount (micro-dollars).
 * The single-instance scripts and the batch scripts share the functions below, so they cannot drift apart.
 */
const LIB = `
local function window_state(cur_key, prev_key, window, now, start)
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local prev = tonumber(redis.call('GET', prev_key) or '0')
  return prev * (1 - (now - start) / window) + cur, prev, cur
end
local function window_add(cur_key, window, cost)
  local cur = redis.call('INCRBY', cur_key, cost)
  redis.call('PEXPIRE', cur_key, window * 2)
  return cur
end
local function window_adjust(key, delta, ttl)
  local value = redis.call('INCRBY', key, delta)
  if value < 0 then redis.call('SET', key, 0) end
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
end
local function live_leases(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key)
end
local function lease_add(key, id, expires_at, ttl)
  redis.call('ZADD', key, expires_at, id)
  redis.call('PEXPIRE', key, ttl)
end
local function expire_reservations(kb, kr, ka, now)
  local ids = redis.call('ZRANGEBYSCORE', kr, '-inf', now)
  for _, id in ipairs(ids) do
    local amount = tonumber(redis.call('HGET', ka, id) or '0')
    redis.call('HINCRBY', kb, 'reserved', -amount)
    redis.call('HDEL', ka, id)
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', kr, '-inf', now) end
end
local function budget_state(kb)
  return tonumber(redis.call('HGET', kb, 'spent') or '0'), tonumber(redis.call('HGET', kb, 'reserved') or '0')
end
local function expire_group_at(kb, kr, ka, at)
  if tonumber(at) > 0 then
    redis.call('PEXPIREAT', kb, at)
    redis.call('PEXPIREAT', kr, at)
    redis.call('PEXPIREAT', ka, at)
  end
end
local function budget_add(kb, kr, ka, amount, id, expires_at, group_expire_at)
  redis.call('HINCRBY', kb, 'reserved', amount)
  redis.call('ZADD', kr, expires_at, id)
  redis.call('HSET', ka, id, amount)
  expire_group_at(kb, kr, ka, group_expire_at)
end
local function budget_settle(kb, kr, ka, id, actual, now, group_expire_at)
  expire_reservations(kb, kr, ka, now)
  local amount = redis.call('HGET', ka, id)
  if amount then
    redis.call('HINCRBY', kb, 'reserved', -tonumber(amount))
    redis.call('HDEL', ka, id)
    redis.call('ZREM', kr, id)
  end
  redis.call('HINCRBY', kb, 'spent', actual)
  expire_group_at(kb, kr, ka, group_expire_at)
end
`;

/** ADMIT_ALL's per-group functions (shared with SETTLE_THEN_ADMIT). */
const ADMIT_FNS = `
-- Numbers are compared as numbers and handed to Redis as the strings they came in.
local function admit_ops(ops, now, result, base)
  local refused = 0
  for i, op in ipairs(ops) do
    local allowed, x, y
    if op.t == 'w' then
      local weighted
      weighted, x, y = window_state(KEYS[op.k], KEYS[op.k + 1], op.window, tonumber(now), op.start)
      local cost = tonumber(op.cost)
      allowed = not (cost > 0 and weighted + cost > op.limit)
    elseif op.t == 'l' then
      x, y = live_leases(KEYS[op.k], now), 0
      allowed = x < op.limit
    else
      expire_reservations(KEYS[op.k], KEYS[op.k + 1], KEYS[op.k + 2], now)
      x, y = budget_state(KEYS[op.k])
      allowed = x + y + tonumber(op.amount) <= op.limit
    end
    if not allowed and refused == 0 then refused = i end
    local at = base + 1 + (i - 1) * 3
    result[at + 1], result[at + 2], result[at + 3] = allowed and 1 or 0, x, y
  end
  result[base + 1] = refused
  if refused > 0 then return end
  for i, op in ipairs(ops) do
    local at = base + 1 + (i - 1) * 3
    if op.t == 'w' then
      if tonumber(op.cost) > 0 then result[at + 3] = window_add(KEYS[op.k], op.window, op.cost) end
    elseif op.t == 'l' then
      lease_add(KEYS[op.k], op.id, op.expires, op.ttl)
      result[at + 2] = result[at + 2] + 1
    else
      budget_add(KEYS[op.k], KEYS[op.k + 1], KEYS[op.k + 2], op.amount, op.id, op.expires, op.group)
      result[at + 2], result[at + 3] = budget_state(KEYS[op.k])
    end
  end
end
local function admit_group(k, a, result)
  local now, count = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local ops = {}
  for _ = 1, count do
    local t = ARGV[a]
    local op = {t = t, k = k}
    if t == 'w' then
      op.window, op.limit, op.cost, op.start = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3], tonumber(ARGV[a + 4])
      k, a = k + 2, a + 5
    elseif t == 'l' then
      op.limit, op.id, op.expires, op.ttl = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
      k, a = k + 1, a + 5
    elseif t == 'b' then
      op.limit, op.amount, op.id, op.expires, op.group = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
      k, a = k + 3, a + 6
    else
      error('admission group: unknown entry ' .. tostring(t))
    end
    ops[#ops + 1] = op
  end
  local base = #result
  for i = 1, 1 + #ops * 3 do result[base + i] = 0 end
  local ok, err = pcall(admit_ops, ops, now, result, base)
  if not ok then
    for i = 1, 1 + #ops * 3 do result[base + i] = 0 end
    result[base + 1] = tostring(err)
  end
  return k, a
end
`;

/** SETTLE_ALL's per-group functions (shared with SETTLE_THEN_ADMIT). */
const SETTLE_FNS = `
local function settle_ops(entries, now, out, base)
  for i, e in ipairs(entries) do
    local t, k, a = e[1], e[2], e[3]
    local spent, reserved = 0, 0
    if t == 'a' then
      if tonumber(ARGV[a + 1]) ~= 0 then window_adjust(KEYS[k], ARGV[a + 1], ARGV[a + 2]) end
    elseif t == 'r' then
      redis.call('ZREM', KEYS[k], ARGV[a + 1])
    else
      budget_settle(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a + 1], ARGV[a + 2], now, ARGV[a + 3])
      spent, reserved = budget_state(KEYS[k])
    end
    out[base + 2 * i], out[base + 2 * i + 1] = spent, reserved
  end
end
local function settle_group(k, a, out)
  local now, count = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local entries = {}
  for _ = 1, count do
    local t = ARGV[a]
    entries[#entries + 1] = {t, k, a}
    if t == 'a' then
      k, a = k + 1, a + 3
    elseif t == 'r' then
      k, a = k + 1, a + 2
    elseif t == 's' then
      k, a = k + 3, a + 4
    else
      error('settlement group: unknown entry ' .. tostring(t))
    end
  end
  local base = #out
  for i = 1, 1 + #entries * 2 do out[base + i] = 0 end
  local ok, err = pcall(settle_ops, entries, now, out, base)
  out[base + 1] = ok and 1 or tostring(err)
  return k, a
end
`;

/** KEYS: current window, previous window. ARGV: windowMs, limit, cost, now, windowStart. → {allowed, previous, current} */
export const WINDOW_TAKE = `${LIB}
local cost = tonumber(ARGV[3])
local weighted, prev, cur = window_state(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5]))
if cost > 0 and weighted + cost > tonumber(ARGV[2]) then return {0, prev, cur} end
if cost > 0 then cur = window_add(KEYS[1], tonumber(ARGV[1]), cost) end
return {1, prev, cur}
`;

/** KEYS: the window. ARGV: delta, ttl ms. Never below zero. */
export const WINDOW_ADJUST = `${LIB}
window_adjust(KEYS[1], ARGV[1], ARGV[2])
return 1
`;

/** KEYS: lease set. ARGV: limit, id, expiresAt, now, ttl. → {allowed, inFlight} */
export const LEASE_ACQUIRE = `${LIB}
local n = live_leases(KEYS[1], ARGV[4])
if n >= tonumber(ARGV[1]) then return {0, n} end
lease_add(KEYS[1], ARGV[2], ARGV[3], ARGV[5])
return {1, n + 1}
`;

/** KEYS: lease set. ARGV: now. → live leases */
export const LEASE_COUNT = `${LIB}
return live_leases(KEYS[1], ARGV[1])
`;

/** ARGV: limit, amount, id, reservationExpiresAt, now, groupExpireAt (0 = never). → {allowed, spent, reserved} */
export const BUDGET_RESERVE = `${LIB}
expire_reservations(KEYS[1], KEYS[2], KEYS[3], ARGV[5])
local spent, reserved = budget_state(KEYS[1])
if spent + reserved + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return {0, spent, reserved} end
budget_add(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[6])
return {1, budget_state(KEYS[1])}
`;

/** ARGV: id, actual, now, groupExpireAt. → {1, spent, reserved} */
export const BUDGET_SETTLE = `${LIB}
budget_settle(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return {1, budget_state(KEYS[1])}
`;

/** ARGV: now. → {1, spent, reserved} */
export const BUDGET_READ = `${LIB}
expire_reservations(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return {1, budget_state(KEYS[1])}
`;

/**
 * Several limit instances taken at once, all or nothing, for one request or for several: the store gathers the
 * requests that arrive together and sends them as one call (one command for ioredis and Redis instead of one
 * per request); each request's group is still all or nothing on its own, and groups run in arrival order.
 * ARGV, per group: now, the number of entries, then the entries, their keys taken from KEYS in order:
 *   'w', windowMs, limit, cost, windowStart       (2 keys: current, previous window)
 *   'l', limit, id, expiresAt, ttl                (1 key: lease set)
 *   'b', limit, amount, id, expiresAt, expireAt   (3 keys: budget group)
 * → per group {refused, then three numbers per entry}: refused is the 1-based position of the first entry that
 * refused (0 when all admitted); per entry {allowed, previous, current} / {allowed, inFlight, 0} /
 * {allowed, spent, reserved}, after the additions when all admitted. A group whose commands fail (e.g. a number
 * Redis cannot count) gets the error's text in place of `refused`, and the groups around it are unaffected; what
 * the failed group wrote before the error stays, as it would have in a call of its own.
 */
export const ADMIT_ALL = `${LIB}${ADMIT_FNS}
local result, k, a = {}, 1, 1
while a <= #ARGV do k, a = admit_group(k, a, result) end
return result
`;

/**
 * Several settlements at once, for one request or for several (gathered as ADMIT_ALL's groups are).
 * ARGV, per group: now, the number of entries, then the entries, their keys taken from KEYS in order:
 *   'a', delta, ttl              (1 key: window)        window reconciliation, never below zero
 *   'r', id                      (1 key: lease set)     lease release
 *   's', id, actual, expireAt    (3 keys: budget group) reservation replaced by the actual spend
 * → per group {1, then two numbers per entry}: {spent, reserved} after a budget settlement, {0, 0} otherwise. A
 * group whose commands fail gets the error's text in place of the 1; the groups around it are unaffected.
 */
export const SETTLE_ALL = `${LIB}${SETTLE_FNS}
local out, k, a = {}, 1, 1
while a <= #ARGV do k, a = settle_group(k, a, out) end
return out
`;

/**
 * Settlements and admissions in one call: ARGV[1] is the number of settlement groups, which come first (as in
 * SETTLE_ALL), then admission groups (as in ADMIT_ALL) to the end; KEYS in the same order. Settling first gives
 * the leases and reservations back before the admissions are checked. → the settlement groups' replies, then the
 * admission groups'.
 */
export const SETTLE_THEN_ADMIT = `${LIB}${SETTLE_FNS}${ADMIT_FNS}
local out, k, a = {}, 1, 2
for _ = 1, tonumber(ARGV[1]) do k, a = settle_group(k, a, out) end
while a <= #ARGV do k, a = admit_group(k, a, out) end
return out
`;
