-- tollgate put_outbox v1: store or replace a message, appending its id to
-- the delivery order only the first time, so the order never loses or
-- repeats a message. Owned by src/store/redis_store/records.rs.
-- KEYS (one slot, `{outbox}`): 1 messages hash (id -> JSON), 2 order list.
-- ARGV: 1 message id, 2 message JSON.
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
return 1
