-- v1 add_delivery: create a delivery unless it exists, queue it, index it.
-- KEYS: delivery record, endpoint's deliveries (zset), due (zset)
-- ARGV: JSON, created ms, next attempt ms, delivery id
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  return 1
end
return 0
