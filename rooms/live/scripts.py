"""Lua scripts of the Redis room state. Each touches keys of ONE room only, all under
the room's hash tag, so they run unchanged on Redis Cluster.

Times come from the Redis server's clock (TIME), so processes on hosts with skewed
clocks still agree on mutes, slow mode and presence expiry. The enforcement hash
holds ``_v`` once loaded from SQL; scripts that need it answer ``load`` otherwise.
"""

# KEYS: control hash, posters hash. ARGV: user, is_host (1/0), rate per s, burst.
# Returns {verdict, wait_ms}: ok | load | ended | banned | muted | slow | rate.
ADMIT = """
if redis.call('HEXISTS', KEYS[1], '_v') == 0 then return {'load', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = redis.call('HMGET', KEYS[1], 'st', 'b:' .. ARGV[1], 'm:' .. ARGV[1], 'slow')
if c[1] == 'ended' then return {'ended', 0} end
local host = ARGV[2] == '1'
if not host then
  if c[2] then return {'banned', 0} end
  if c[3] then
    local untl = tonumber(c[3])
    if untl == 0 then return {'muted', 0} end
    if untl > now then return {'muted', untl - now} end
  end
end
local rate = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local tokens, stamp, last = burst, now, 0
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if rec then
  local a, b, d = string.match(rec, '^([^:]+):([^:]+):([^:]+)$')
  tokens, stamp, last = tonumber(a), tonumber(b), tonumber(d)
end
local slow = tonumber(c[4] or '0') * 1000
if not host and slow > 0 and now - last < slow then return {'slow', last + slow - now} end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate / 1000)
if tokens < 1 then return {'rate', math.ceil((1 - tokens) * 1000 / rate)} end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.4f:%d:%d', tokens - 1, now, now))
return {'ok', 0}
"""

# KEYS: control hash. ARGV: field, value, field, value, ... Loads only if not loaded.
LOAD_CONTROL = """
if redis.call('HEXISTS', KEYS[1], '_v') == 1 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], '_v', '1')
return 1
"""

# KEYS: control hash. ARGV: n, then n field/value pairs to set, then fields to delete.
# Returns 0 (nothing changed) when the hash is not loaded: load it, then retry.
UPDATE_CONTROL = """
if redis.call('HEXISTS', KEYS[1], '_v') == 0 then return 0 end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[2 + 2 * i], ARGV[3 + 2 * i]) end
for i = 2 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 1
"""

# KEYS: recent comments list, deleted offsets set. ARGV: entry ("<off>\\n<json>"), keep.
# A comment deleted before it got here (the two race across processes) stays out.
PUSH_COMMENT = """
local off = string.match(ARGV[1], '^(%d+)\\n')
if redis.call('SISMEMBER', KEYS[2], off) == 1 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
"""

# KEYS: control hash, likes, recent comments list, presence hash, presence expiry zset.
# ARGV: comments wanted. Returns {'load'} or {'ok', status, pin, slow, likes, viewers, recent}.
VIEW = """
local c = redis.call('HMGET', KEYS[1], '_v', 'st', 'pin', 'slow')
if not c[1] then return {'load'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local viewers = 0
local live = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. now, '+inf')
if #live > 0 then
  for _, v in ipairs(redis.call('HMGET', KEYS[4], unpack(live))) do
    viewers = viewers + (tonumber(v) or 0)
  end
end
local recent = {}
local wanted = tonumber(ARGV[1])
if wanted > 0 then recent = redis.call('LRANGE', KEYS[3], 0, wanted - 1) end
return {'ok', c[2], c[3] or '', c[4] or '0', redis.call('GET', KEYS[2]) or '0', viewers, recent}
"""

# KEYS: presence hash (process -> count), presence expiry zset, viewer stats hash.
# ARGV: process, count, ttl ms, announce interval ms. Returns {announce 1/0, total}.
PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[2])
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], count)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, p in ipairs(dead) do redis.call('HDEL', KEYS[1], p) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
local s = redis.call('HMGET', KEYS[3], 'peak', 'last', 'at')
if total > tonumber(s[1] or '0') then redis.call('HSET', KEYS[3], 'peak', total) end
if tostring(total) ~= (s[2] or '') and now - tonumber(s[3] or '0') >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[3], 'last', total, 'at', now)
  return {1, total}
end
return {0, total}
"""

# KEYS: recent comments list, deleted offsets set. ARGV: offset. Removes that comment
# and remembers the deletion in case the comment itself arrives later.
DROP_COMMENT = """
redis.call('SADD', KEYS[2], ARGV[1])
local prefix = ARGV[1] .. '\\n'
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #prefix) == prefix then
    redis.call('LREM', KEYS[1], 1, item)
    return 1
  end
end
return 0
"""
