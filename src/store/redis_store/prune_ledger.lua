-- tollgate prune_ledger v1: G3, drop a wallet's ledger entries applied
-- before a time, oldest first, at most ARGV[2] of them per call.
-- KEYS: 1 the wallet's ledger list (JSON entries in apply order).
-- ARGV: 1 the cutoff as `YYYY-MM-DDTHH:MM:SS` (UTC; entries are compared
-- on their first 19 characters, fixed width, so string order is time
-- order), 2 the most entries to drop.
-- Returns how many went.
local dropped = 0
while dropped < tonumber(ARGV[2]) do
  local first = redis.call('LINDEX', KEYS[1], 0)
  if not first then
    break
  end
  local ok, entry = pcall(cjson.decode, first)
  if not ok or type(entry.at) ~= 'string' or string.sub(entry.at, 1, 19) >= ARGV[1] then
    break
  end
  redis.call('LPOP', KEYS[1])
  dropped = dropped + 1
end
return dropped
