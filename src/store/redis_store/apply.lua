-- tollgate apply v1: one wallet batch, checked whole before its first
-- write (Redis scripts do not roll back), then written whole.
-- Owned by src/store/redis_store/ledger.rs, which builds every argument
-- below; all arithmetic stays in Redis integers (HINCRBY with string
-- arguments):
-- Lua numbers are doubles and would round large nano-dollar amounts.
--
-- KEYS (all in the wallet's hash slot, `{wallet_id}`):
--   1 bal (hash: paid, promo, deposits, usage)   2 ledger (list of JSON)
--   3 entries (hash: entry id -> ledger index)   4 batches (set of ids)
--   5 usage_days (zset: date -> day number)      6 keyused (hash)
--   7.. one usage hash per day named in ARGV
-- ARGV:
--   1 batch id, 2 wallet id,
--   3..6 deltas as integer strings: paid, promo, deposits, usage
--   7 n entries, then n triples: entry id, entry wallet id, entry JSON
--   then d days; per day: date, day number, f fields, f pairs (field, incr);
--   day i's hash is KEYS[6 + i]
--   then k keys; k pairs (key id, time as 20-digit zero-padded nanos)
-- Returns {'now' | 'before', paid, promo} or {'corrupt', message}.

local bal, ledger, entries, batches = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local usage_days, keyused = KEYS[5], KEYS[6]
local batch_id, wallet_id = ARGV[1], ARGV[2]

local function balance()
  local v = redis.call('HMGET', bal, 'paid', 'promo')
  return { v[1] or '0', v[2] or '0' }
end

-- Checks, in the memory store's order.
if redis.call('SISMEMBER', batches, batch_id) == 1 then
  local b = balance()
  return { 'before', b[1], b[2] }
end

local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do
  local id, wid = ARGV[i], ARGV[i + 1]
  if wid ~= wallet_id then
    return { 'corrupt', 'entry ' .. id .. ' is for wallet ' .. wid .. ', batch for ' .. wallet_id }
  end
  if redis.call('HEXISTS', entries, id) == 1 then
    return { 'corrupt', 'entry ' .. id .. ' applied twice' }
  end
  i = i + 3
end

-- HINCRBY fails past i64 after earlier writes have landed, so refuse any
-- money field that could get near it first. Doubles are approximate, the
-- margin (2e17 nano-dollars) is far wider than their error here.
local fields = { 'paid', 'promo', 'deposits', 'usage' }
local current = redis.call('HMGET', bal, 'paid', 'promo', 'deposits', 'usage')
for f = 1, 4 do
  local after = tonumber(current[f] or '0') + tonumber(ARGV[2 + f])
  if after > 9.0e18 or after < -9.0e18 then
    return { 'corrupt', 'wallet ' .. wallet_id .. ' ' .. fields[f] .. ' would overflow' }
  end
end

-- Writes.
redis.call('SADD', batches, batch_id)
for f = 1, 4 do
  if ARGV[2 + f] ~= '0' then
    redis.call('HINCRBY', bal, fields[f], ARGV[2 + f])
  end
end

local base = redis.call('LLEN', ledger)
i = 8
for k = 1, n do
  redis.call('RPUSH', ledger, ARGV[i + 2])
  redis.call('HSET', entries, ARGV[i], base + k - 1)
  i = i + 3
end

local days = tonumber(ARGV[i])
i = i + 1
for d = 1, days do
  local day_hash = KEYS[6 + d]
  redis.call('ZADD', usage_days, ARGV[i + 1], ARGV[i])
  local f = tonumber(ARGV[i + 2])
  i = i + 3
  for _ = 1, f do
    redis.call('HINCRBY', day_hash, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end

-- Times are fixed-width digit strings, compared in two exact halves (a
-- whole one exceeds a double's 53 bits; string `<` follows the locale).
local function later(a, b)
  local ah, bh = tonumber(string.sub(a, 1, 10)), tonumber(string.sub(b, 1, 10))
  if ah ~= bh then
    return ah > bh
  end
  return tonumber(string.sub(a, 11)) > tonumber(string.sub(b, 11))
end

local keys = tonumber(ARGV[i])
i = i + 1
for _ = 1, keys do
  local key_id, at = ARGV[i], ARGV[i + 1]
  local seen = redis.call('HGET', keyused, key_id)
  if (not seen) or later(at, seen) then
    redis.call('HSET', keyused, key_id, at)
  end
  i = i + 2
end

local b = balance()
return { 'now', b[1], b[2] }
