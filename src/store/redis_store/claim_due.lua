-- v1 claim_due: take up to ARGV[3] deliveries due at ARGV[1] (ms) and push
-- each back to ARGV[2] (the lease end), so no other worker takes them.
-- KEYS: due (zset)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return ids
