-- tollgate set_key_status v1: change a key's status only if the key exists
-- (a bare HSET would create a record with no body). Owned by
-- src/store/redis_store/keys.rs.
-- KEYS: 1 the key's record hash. ARGV: 1 the new status.
-- Returns 1 when set, 0 when there is no such key.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
return 1
