-- Stock ledger scripts (commerce/redis_ledger.py). Each section starts with a
-- "-- script: NAME" line. Every key of one sale shares the hash tag {sale:<id>}, so each
-- script touches one Redis Cluster slot. Keys of a sale:
--   state      hash: r remaining, g generation, v version, stock, lim, start, end, hold,
--              and h:<reservation id> = "<quantity>:<user id>" per unconfirmed hold
--   users      hash: user id -> units held or bought
--   deadlines  sorted set: reservation id scored by its deadline (ms)
--   keys       hash: "<len(user)>:<user>:<Idempotency-Key>" -> reservation id; the hash
--              expires a key TTL after its last write, so every key lives at least that long

-- script: reserve
-- KEYS: state, users, deadlines, keys.
-- ARGV: reservation id, user id, quantity, now ms, key TTL ms, key field.
-- Returns {outcome, reservation id, remaining, generation, version, deadline}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing', '', 0, 0, 0, 0}
end
local f = redis.call('HMGET', KEYS[1], 'r', 'g', 'v', 'lim', 'start', 'end', 'hold')
local remaining, gen, ver = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local prior = redis.call('HGET', KEYS[4], ARGV[6])
if prior then
  return {'replay', prior, remaining, gen, ver, 0}
end
local now = tonumber(ARGV[4])
if now < tonumber(f[5]) then
  return {'not_started', '', remaining, gen, ver, 0}
end
local ends = tonumber(f[6])
if ends > 0 and now >= ends then
  return {'ended', '', remaining, gen, ver, 0}
end
if remaining <= 0 then
  return {'sold_out', '', remaining, gen, ver, 0}
end
local qty = tonumber(ARGV[3])
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if used + qty > tonumber(f[4]) then
  return {'limit_exceeded', '', remaining, gen, ver, 0}
end
if qty > remaining then
  return {'sold_out', '', remaining, gen, ver, 0}
end
remaining = redis.call('HINCRBY', KEYS[1], 'r', -qty)
ver = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], qty)
local deadline = now + tonumber(f[7])
redis.call('HSET', KEYS[1], 'h:' .. ARGV[1], qty .. ':' .. ARGV[2])
redis.call('ZADD', KEYS[3], deadline, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return {'held', ARGV[1], remaining, gen, ver, deadline}

-- script: give_back
-- KEYS: state, users, deadlines, keys. ARGV: reservation id[, key field to forget].
-- Returns {remaining, generation, version, holds} or nil when the hold is not there.
if ARGV[2] and redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
local hold = redis.call('HGET', KEYS[1], 'h:' .. ARGV[1])
if not hold then
  return nil
end
local sep = string.find(hold, ':', 1, true)
local qty = tonumber(string.sub(hold, 1, sep - 1))
local user = string.sub(hold, sep + 1)
redis.call('HDEL', KEYS[1], 'h:' .. ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HINCRBY', KEYS[2], user, -qty) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
local remaining = redis.call('HINCRBY', KEYS[1], 'r', qty)
local ver = redis.call('HINCRBY', KEYS[1], 'v', 1)
return {remaining, tonumber(redis.call('HGET', KEYS[1], 'g')), ver, redis.call('ZCARD', KEYS[3])}

-- script: settle
-- KEYS: state, deadlines. ARGV: reservation id. Returns 1 if the hold was there.
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], 'h:' .. ARGV[1])

-- script: due
-- KEYS: state, deadlines. ARGV: now ms, limit. Returns {id, "<quantity>:<user>", ...}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local hold = redis.call('HGET', KEYS[1], 'h:' .. id)
  if hold then
    out[#out + 1] = id
    out[#out + 1] = hold
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out

-- script: load
-- KEYS: state, users, deadlines, keys.
-- ARGV: generation, version, stock, lim, start, end, hold, number of holds,
--   then per hold: id, quantity, user, deadline (-1 when confirmed),
--   then the keys' TTL ms, then per key: field, reservation id.
-- Returns 1 if loaded, 0 if this or a newer generation is already there.
local gen = tonumber(ARGV[1])
local current = redis.call('HGET', KEYS[1], 'g')
if current and tonumber(current) >= gen then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local sold = 0
local i = 9
for _ = 1, tonumber(ARGV[8]) do
  local id, qty, user, deadline = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  sold = sold + qty
  redis.call('HINCRBY', KEYS[2], user, qty)
  if deadline >= 0 then
    redis.call('HSET', KEYS[1], 'h:' .. id, qty .. ':' .. user)
    redis.call('ZADD', KEYS[3], deadline, id)
  end
end
local ttl = ARGV[i]
i = i + 1
while i <= #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('PEXPIRE', KEYS[4], ttl)
end
local remaining = tonumber(ARGV[3]) - sold
if remaining < 0 then
  remaining = 0
end
redis.call('HSET', KEYS[1], 'r', remaining, 'g', gen, 'v', ARGV[2], 'stock', ARGV[3],
  'lim', ARGV[4], 'start', ARGV[5], 'end', ARGV[6], 'hold', ARGV[7])
return 1
