-- tollgate export_ack v2: drop entries PostgreSQL confirmed from a
-- wallet's export stream (G2). The stream itself stays, empty: deleting it
-- would reset its last id, and a new entry could then get an id another
-- exporter still holds as a stale cursor (an empty stream costs per
-- wallet, not per request).
-- KEYS: 1 the wallet's export stream. ARGV: the stream ids to drop.
if #ARGV > 0 then
  return redis.call('XDEL', KEYS[1], unpack(ARGV))
end
return 0
