-- tollgate apply v2: one wallet batch, checked whole before its first
-- write (Redis scripts do not roll back), then written whole.
-- Owned by src/store/redis_store/ledger.rs, which builds every argument
-- below; every write of money stays in Redis integers (HINCRBY with string
-- arguments): Lua numbers are doubles and would round large nano-dollar
-- amounts. The range checks (B10) add in exact 9-digit halves (`sum`).
--
-- KEYS (all in the wallet's hash slot, `{wallet_id}`):
--   1 bal (hash: paid, promo, deposits, deposits_hi, usage, usage_hi)
--   2 ledger (list of JSON; G3, only when not exporting)
--   3 entries (hash: id -> JSON of deposits and transfers, kept for good)
--   4 the batch's memory: `hw:WRITER` (a writer's high-water sequence) or
--     `batch:ID` (one batch id), both expiring after ARGV[8] seconds (G1)
--   5 usage_days (zset: date -> day number)      6 keyused (hash)
--   7 export (stream of entry JSON waiting for PostgreSQL; G2)
--   8.. one usage hash per day named in ARGV
-- ARGV:
--   1 batch id, 2 wallet id,
--   3..6 deltas as integer strings: paid, promo, deposits, usage
--   7 the batch's sequence ('' for none: KEYS[4] is a batch id key)
--   8 batch memory ttl in seconds, 9 '1' to export (G2) else '0',
--   10 the most entries the export stream may hold
--   11 n entries, then n quads: entry id, entry wallet id, 'm' for a
--   money movement (kept by id) or 's', entry JSON
--   then d days; per day: date, day number, f fields, f pairs (field, incr);
--   day i's hash is KEYS[7 + i]
--   then k keys; k pairs (key id, time as 20-digit zero-padded nanos)
-- Returns {'now' | 'before', paid, promo}, {'range', message} (B10: a
-- balance or counter would leave i64; nothing written), {'backlog',
-- message} (G2: the export stream is full; nothing written) or
-- {'corrupt', message}.
--
-- B10, the reconciliation counters: `deposits` and `usage` only grow, and
-- over a wallet's life may pass i64. Each is kept as two fields, the value
-- being `X_hi * 4e18 + X`: whenever adding a delta would take `X` to 4e18
-- or beyond, the script carries 4e18 into `X_hi` (HINCRBY by exact
-- integer strings). ledger.rs refuses a batch whose delta on either is
-- above 4e18 or below zero, so `X` stays in [0, 4e18) and no HINCRBY on it
-- can overflow; `money_totals` sums `X_hi * 4e18 + X` in i128.

local bal, ledger, entries, memory = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local usage_days, keyused, export = KEYS[5], KEYS[6], KEYS[7]
local batch_id, wallet_id = ARGV[1], ARGV[2]
local seq, ttl, exporting, backlog_max = ARGV[7], ARGV[8], ARGV[9] == '1', tonumber(ARGV[10])

local function balance()
  local v = redis.call('HMGET', bal, 'paid', 'promo')
  return { v[1] or '0', v[2] or '0' }
end

-- Checks, in the memory store's order. A sequence at or below the
-- writer's high-water mark, or a remembered batch id, was applied before.
local before = false
if seq == '' then
  before = redis.call('EXISTS', memory) == 1
else
  local hw = redis.call('GET', memory)
  before = hw ~= false and tonumber(hw) >= tonumber(seq)
end
if before then
  local b = balance()
  return { 'before', b[1], b[2] }
end

local n = tonumber(ARGV[11])
local i = 12
local known = 0
for _ = 1, n do
  local id, wid = ARGV[i], ARGV[i + 1]
  if wid ~= wallet_id then
    return { 'corrupt', 'entry ' .. id .. ' is for wallet ' .. wid .. ', batch for ' .. wallet_id }
  end
  if ARGV[i + 2] == 'm' and redis.call('HEXISTS', entries, id) == 1 then
    known = known + 1
  end
  i = i + 4
end
-- Deposits and transfers are kept by id for good: a replay after its
-- batch id expired is still recognised.
if known > 0 then
  if known == n then
    local b = balance()
    return { 'before', b[1], b[2] }
  end
  return { 'corrupt', 'batch ' .. batch_id .. ' repeats entries applied before' }
end
if exporting then
  local waiting = redis.call('XLEN', export)
  -- An empty queue takes any batch, so a batch that grew while the
  -- database was away can never be refused for good.
  if waiting > 0 and waiting + n > backlog_max then
    return { 'backlog', 'ledger export backlog of wallet ' .. wallet_id .. ' is full (' .. waiting .. ' entries)' }
  end
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
local days_at = 12 + 4 * n
do
  local j = days_at + 1
  for d = 1, tonumber(ARGV[days_at]) do
    local f = tonumber(ARGV[j + 2])
    j = j + 3
    for _ = 1, f do
      local cur = redis.call('HGET', KEYS[7 + d], ARGV[j]) or '0'
      if not in_i64(sum(cur, ARGV[j + 1])) then
        return refused
      end
      j = j + 2
    end
  end
end

-- Writes.
if seq == '' then
  redis.call('SET', memory, '1', 'EX', ttl)
else
  redis.call('SET', memory, seq, 'EX', ttl)
end
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

i = 12
for _ = 1, n do
  local json = ARGV[i + 3]
  if ARGV[i + 2] == 'm' then
    redis.call('HSET', entries, ARGV[i], json)
  end
  if exporting then
    redis.call('XADD', export, '*', 'e', json)
  else
    redis.call('RPUSH', ledger, json)
  end
  i = i + 4
end

local days = tonumber(ARGV[i])
i = i + 1
for d = 1, days do
  local day_hash = KEYS[7 + d]
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
