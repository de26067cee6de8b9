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
-- Attempts queued in the same moment for one sale, in order; each is one atomic step
-- (the whole call is atomic too). O(1) per attempt.
-- KEYS: state, users, deadlines, keys.
-- ARGV: key TTL ms, then per attempt: reservation id, user id, quantity, now ms, key field.
-- Returns per attempt {outcome, reservation id, remaining, generation, version, deadline}, flattened.
local out = {}
local missing = redis.call('EXISTS', KEYS[1]) == 0
local f = redis.call('HMGET', KEYS[1], 'r', 'g', 'v', 'lim', 'start', 'end', 'hold')
local remaining, gen, ver = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
local function answer(outcome, rid, deadline)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = outcome, rid, remaining or 0
  out[n + 4], out[n + 5], out[n + 6] = gen or 0, ver or 0, deadline
end
for i = 2, #ARGV, 5 do
  local rid, user, qty, now, field = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4]
  local prior = not missing and redis.call('HGET', KEYS[4], field)
  if missing then
    answer('missing', '', 0)
  elseif prior then
    answer('replay', prior, 0)
  elseif now < tonumber(f[5]) then
    answer('not_started', '', 0)
  elseif tonumber(f[6]) > 0 and now >= tonumber(f[6]) then
    answer('ended', '', 0)
  elseif remaining <= 0 then
    answer('sold_out', '', 0)
  elseif tonumber(redis.call('HGET', KEYS[2], user) or '0') + qty > tonumber(f[4]) then
    answer('limit_exceeded', '', 0)
  elseif qty > remaining then
    answer('sold_out', '', 0)
  else
    remaining = redis.call('HINCRBY', KEYS[1], 'r', -qty)
    ver = redis.call('HINCRBY', KEYS[1], 'v', 1)
    redis.call('HINCRBY', KEYS[2], user, qty)
    local deadline = now + tonumber(f[7])
    redis.call('HSET', KEYS[1], 'h:' .. rid, qty .. ':' .. user)
    redis.call('ZADD', KEYS[3], deadline, rid)
    redis.call('HSET', KEYS[4], field, rid)
    redis.call('PEXPIRE', KEYS[4], ARGV[1])
    answer('held', rid, deadline)
  end
end
return out

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
