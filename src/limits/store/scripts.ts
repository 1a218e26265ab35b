/**
 * Lua scripts of the Redis store. Each runs atomically and touches one key group whose keys share a hash tag,
 * so on a Redis Cluster each script runs on one slot. Budget keys: KEYS[1] hash {spent, reserved},
 * KEYS[2] sorted set reservation id → expiry, KEYS[3] hash reservation id → amount (micro-dollars).
 */
const EXPIRE_RESERVATIONS = `
local function expire_reservations(now)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, id in ipairs(ids) do
    local amount = tonumber(redis.call('HGET', KEYS[3], id) or '0')
    redis.call('HINCRBY', KEYS[1], 'reserved', -amount)
    redis.call('HDEL', KEYS[3], id)
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
end
local function expire_group_at(at)
  if tonumber(at) > 0 then
    for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], at) end
  end
end
local function budget_state(allowed)
  return {allowed, tonumber(redis.call('HGET', KEYS[1], 'spent') or '0'), tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')}
end
`;

/** KEYS: current window, previous window. ARGV: windowMs, limit, cost, now, windowStart. → {allowed, previous, current} */
export const WINDOW_TAKE = `
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local window = tonumber(ARGV[1])
local cost = tonumber(ARGV[3])
local weighted = prev * (1 - (tonumber(ARGV[4]) - tonumber(ARGV[5])) / window) + cur
if cost > 0 and weighted + cost > tonumber(ARGV[2]) then return {0, prev, cur} end
if cost > 0 then
  cur = redis.call('INCRBY', KEYS[1], cost)
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
return {1, prev, cur}
`;

/** KEYS: the window. ARGV: delta, ttl ms. Never below zero. */
export const WINDOW_ADJUST = `
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value < 0 then redis.call('SET', KEYS[1], 0) end
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`;

/** KEYS: lease set. ARGV: limit, id, expiresAt, now, ttl. → {allowed, inFlight} */
export const LEASE_ACQUIRE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, n} end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, n + 1}
`;

/** KEYS: lease set. ARGV: now. → live leases */
export const LEASE_COUNT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
`;

/** ARGV: limit, amount, id, reservationExpiresAt, now, groupExpireAt (0 = never). → {allowed, spent, reserved} */
export const BUDGET_RESERVE = `${EXPIRE_RESERVATIONS}
expire_reservations(ARGV[5])
local state = budget_state(1)
if state[2] + state[3] + tonumber(ARGV[2]) > tonumber(ARGV[1]) then state[1] = 0 return state end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
expire_group_at(ARGV[6])
return budget_state(1)
`;

/** ARGV: id, actual, now, groupExpireAt. → {1, spent, reserved} */
export const BUDGET_SETTLE = `${EXPIRE_RESERVATIONS}
expire_reservations(ARGV[3])
local amount = redis.call('HGET', KEYS[3], ARGV[1])
if amount then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amount))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
expire_group_at(ARGV[4])
return budget_state(1)
`;

/** ARGV: now. → {1, spent, reserved} */
export const BUDGET_READ = `${EXPIRE_RESERVATIONS}
expire_reservations(ARGV[1])
return budget_state(1)
`;
