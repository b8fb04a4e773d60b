-- tollgate export_ack v1: drop entries PostgreSQL confirmed from a
-- wallet's export stream (G2), and the stream itself once empty, in one
-- step so an entry `apply` adds meanwhile is never deleted with it.
-- KEYS: 1 the wallet's export stream. ARGV: the stream ids to drop.
if #ARGV > 0 then
  redis.call('XDEL', KEYS[1], unpack(ARGV))
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
end
return 1
