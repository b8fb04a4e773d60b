-- tollgate apply v1: one wallet batch, checked whole before its first
-- write (Redis scripts do not roll back), then written whole.
-- Owned by src/store/redis_store/ledger.rs, which builds every argument
-- below; every write of money stays in Redis integers (HINCRBY with string
-- arguments): Lua numbers are doubles and would round large nano-dollar
-- amounts. The range checks (B10) add in exact 9-digit halves (`sum`).
--
-- KEYS (all in the wallet's hash slot, `{wallet_id}`):
--   1 bal (hash: paid, promo, deposits, deposits_hi, usage, usage_hi)   2 ledger (list of JSON)
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
-- Returns {'now' | 'before', paid, promo}, {'range', message} (B10: a
-- balance or counter would leave i64; nothing written) or
-- {'corrupt', message}.
--
-- B10, the reconciliation counters: `deposits` and `usage` only grow, and
-- over a wallet's life may pass i64. Each is kept as two fields, the value
-- being `X_hi * 4e18 + X`: whenever adding a delta would take `X` to 4e18
-- or beyond, the script carries 4e18 into `X_hi` (HINCRBY by exact
-- integer strings). ledger.rs refuses a batch whose delta on either is
-- above 4e18 or below zero, so `X` stays in [0, 4e18) and no HINCRBY on it
-- can overflow; `money_totals` sums `X_hi * 4e18 + X` in i128.

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

-- Exact integer sums for the range checks (B10). A decimal string is
-- split into its last 9 digits and the rest, both exact in a double; sums
-- of a few such pairs stay far below 2^53, so nothing here rounds.
local function split(s)
  local neg = string.sub(s, 1, 1) == '-'
  local d = neg and string.sub(s, 2) or s
  local n = #d
  local hi = n > 9 and tonumber(string.sub(d, 1, n - 9)) or 0
  local lo = tonumber(string.sub(d, math.max(1, n - 8)))
  if neg then
    return -hi, -lo
  end
  return hi, lo
end

-- The exact sum of integer strings as (hi, lo): hi * 1e9 + lo, 0 <= lo < 1e9.
local function sum(...)
  local hi, lo = 0, 0
  for _, s in ipairs({ ... }) do
    local h, l = split(s)
    hi, lo = hi + h, lo + l
  end
  local carry = math.floor(lo / 1e9)
  return hi + carry, lo - carry * 1e9
end

-- Whether hi * 1e9 + lo (0 <= lo < 1e9) is an i64.
local function in_i64(hi, lo)
  if hi > 9223372036 or (hi == 9223372036 and lo > 854775807) then
    return false
  end
  return hi > -9223372037 or (hi == -9223372037 and lo >= 145224192)
end

-- Redis fails an HINCRBY past i64 after earlier writes have landed (no
-- rollback), so every one this script makes is checked here first.
local fields = { 'paid', 'promo', 'deposits', 'usage' }
local current = redis.call('HMGET', bal, 'paid', 'promo', 'deposits', 'usage')
for f = 1, 4 do
  current[f] = current[f] or '0'
end
local refused = { 'range', 'batch ' .. batch_id .. ' would take wallet ' .. wallet_id .. ' outside i64' }
if not in_i64(sum(current[1], ARGV[3])) or not in_i64(sum(current[2], ARGV[4]))
    or not in_i64(sum(current[1], current[2], ARGV[3], ARGV[4])) then
  return refused
end
-- Where the usage days start in ARGV (after the entries).
local days_at = 8 + 3 * n
do
  local j = days_at + 1
  for d = 1, tonumber(ARGV[days_at]) do
    local f = tonumber(ARGV[j + 2])
    j = j + 3
    for _ = 1, f do
      local cur = redis.call('HGET', KEYS[6 + d], ARGV[j]) or '0'
      if not in_i64(sum(cur, ARGV[j + 1])) then
        return refused
      end
      j = j + 2
    end
  end
end

-- Writes.
redis.call('SADD', batches, batch_id)
for f = 1, 2 do
  if ARGV[2 + f] ~= '0' then
    redis.call('HINCRBY', bal, fields[f], ARGV[2 + f])
  end
end
-- The counters, carried in units of 4e18 (see the header).
for f = 3, 4 do
  local delta = ARGV[2 + f]
  if delta ~= '0' then
    local hi = sum(current[f], delta)
    local carries = math.floor(hi / 4e9)
    if carries >= 1 then
      redis.call('HINCRBY', bal, fields[f], '-4000000000000000000')
      redis.call('HINCRBY', bal, fields[f], delta)
      for _ = 2, carries do
        redis.call('HINCRBY', bal, fields[f], '-4000000000000000000')
      end
      redis.call('HINCRBY', bal, fields[f] .. '_hi', carries)
    else
      redis.call('HINCRBY', bal, fields[f], delta)
    end
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
