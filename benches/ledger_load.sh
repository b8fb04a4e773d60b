#!/usr/bin/env bash
# The ledger exporter under load (G2): the same closed-loop load (wrk) on
# two gateways on the Redis store, alternated round by round:
#   redis     no ledger_url: entries kept in Redis lists (G3)
#   exporter  ledger_url set: entries streamed and exported to PostgreSQL
# Prints throughput per path, the exporter/redis ratio, the export lag seen
# during the runs (tollgate_ledger_export_lag_seconds, sampled every 0.2 s)
# and how long the backlog took to drain after the last run.
#
# Usage: benches/ledger_load.sh   (LOAD_ROUNDS 3, LOAD_SECONDS 10,
#        LOAD_CONNECTIONS 32; LOAD_TOLLGATE_BIN to use a built binary)
# Needs wrk, curl, jq, redis-server and PostgreSQL's server binaries
# (installed with apt-get when missing); each server is private, on a free
# port in a temp dir, and stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${LOAD_ROUNDS:-3}
SECONDS_PER_RUN=${LOAD_SECONDS:-10}
CONNECTIONS=${LOAD_CONNECTIONS:-32}
OPERATOR_TOKEN="ledger-load-$RANDOM$RANDOM"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello! Please say hello back."}],"max_tokens":16}'

log() { printf '[ledger-load] %s\n' "$*" >&2; }

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
command -v jq >/dev/null || need_apt+=(jq)
command -v redis-server >/dev/null || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")

if [[ -n "${LOAD_TOLLGATE_BIN:-}" ]]; then
  TOLLGATE=$LOAD_TOLLGATE_BIN
else
  log "building tollgate (release)"
  cargo build --release --quiet
  TOLLGATE="$ROOT/target/release/tollgate"
fi

WORK=$(mktemp -d /tmp/tollgate-ledger-load.XXXXXX)
KEEP_WORK=""
# shellcheck source=benches/lib.sh
source benches/lib.sh

as_pg() { # PostgreSQL refuses to run as root
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop_pg() { as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop_pg; cleanup' EXIT

wait_http() {
  for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  log "nothing answers at $1"; return 1
}

free_port UP_PORT; free_port REDIS_PORT; free_port PG_PORT
free_port GW_A; free_port GW_B; free_port M_A; free_port M_B

"$TOLLGATE" mock-upstream --listen "127.0.0.1:$UP_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
[[ $(id -u) == 0 ]] && chown postgres: "$WORK"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U tollgate --no-sync >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null

gateway() { # port metrics_port prefix [ledger_url]
  TOLLGATE_LISTEN="127.0.0.1:$1" TOLLGATE_METRICS_LISTEN="127.0.0.1:$2" \
  TOLLGATE_STORE="redis://127.0.0.1:$REDIS_PORT/" TOLLGATE_REDIS_PREFIX="$3" \
  TOLLGATE_LEDGER_URL="${4:-}" \
  TOLLGATE_UPSTREAM_URL="http://127.0.0.1:$UP_PORT" \
  TOLLGATE_OPERATOR_TOKEN="$OPERATOR_TOKEN" TOLLGATE_PRICING=config/pricing.toml \
    "$TOLLGATE" serve >"$WORK/gw-$1.log" 2>&1 &
  PIDS+=($!)
}
gateway "$GW_A" "$M_A" "a:"
gateway "$GW_B" "$M_B" "b:" "postgres://tollgate@127.0.0.1:$PG_PORT/postgres"
wait_http "http://127.0.0.1:$GW_A/readyz"
wait_http "http://127.0.0.1:$GW_B/readyz"

funded_key() { # gateway port -> key
  local gw="http://127.0.0.1:$1" email="l$RANDOM$RANDOM@example.com" id session
  local j=(-sS -H 'content-type: application/json')
  id=$(curl "${j[@]}" "$gw/api/users" -d "{\"email\":\"$email\",\"password\":\"load-password-1\"}" | jq -r .id)
  session=$(curl "${j[@]}" "$gw/api/sessions" -d "{\"email\":\"$email\",\"password\":\"load-password-1\"}" | jq -r .token)
  curl "${j[@]}" "$gw/api/admin/deposits" -H "authorization: Bearer $OPERATOR_TOKEN" \
    -H "Idempotency-Key: l$RANDOM$RANDOM" \
    -d "{\"user_id\":\"$id\",\"amount\":\"1000000\",\"kind\":\"stripe\"}" >/dev/null
  curl "${j[@]}" "$gw/api/keys" -H "authorization: Bearer $session" -d '{"name":"load"}' | jq -r .key
}
declare -A KEY=([redis]=$(funded_key "$GW_A") [exporter]=$(funded_key "$GW_B"))
declare -A PORT=([redis]=$GW_A [exporter]=$GW_B)

script() { # path key
  cat >"$WORK/$1.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %d\n", summary.requests / (summary.duration / 1e6),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
EOF
}
for p in redis exporter; do script "$p" "${KEY[$p]}"; done

lag_max=0
sample_lag() { # until the file $WORK/stop exists
  local v
  while [[ ! -e "$WORK/stop" ]]; do
    v=$(curl -s "http://127.0.0.1:$M_B/metrics" | awk '/^tollgate_ledger_export_lag_seconds /{print $2}')
    [[ -n "$v" ]] && echo "$v" >>"$WORK/lag"
    sleep 0.2
  done
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
log "warm-up"
for p in redis exporter; do
  wrk -t2 -c"$CONNECTIONS" -d3s -s "$WORK/$p.lua" "http://127.0.0.1:${PORT[$p]}/v1/chat/completions" >/dev/null
done
rm -f "$WORK/stop"; sample_lag & SAMPLER=$!
for r in $(seq "$ROUNDS"); do
  for p in redis exporter; do
    line=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/$p.lua" \
      "http://127.0.0.1:${PORT[$p]}/v1/chat/completions" | grep '^RESULT')
    read -r _ rps bad <<<"$line"
    log "round $r $p: $rps req/s, errors $bad"
    printf '%s\t%s\t%s\t%s\n' "$r" "$p" "$rps" "$bad" >>"$RESULTS"
  done
done
start=$(date +%s.%N)
until [[ $(curl -s "http://127.0.0.1:$M_B/metrics" | awk '/^tollgate_ledger_export_lag_seconds /{print $2}') == 0 ]]; do
  sleep 0.05
done
drain=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f", e - s}')
touch "$WORK/stop"; wait "$SAMPLER" || true
rows=$(as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U tollgate -d postgres -Atc 'select count(*) from request_records')

echo
echo "ledger load: $(nproc) cores; wrk -t2 -c$CONNECTIONS, ${SECONDS_PER_RUN}s x $ROUNDS rounds, alternated"
awk -F'\t' -v rounds="$ROUNDS" '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  { rps[$2,$1] = $3; bad[$2] += $4 }
  END {
    for (r = 1; r <= rounds; r++) { a[r] = rps["redis",r]; b[r] = rps["exporter",r]; c[r] = b[r] / a[r] }
    printf "redis store, no ledger_url:  %8.0f req/s (errors %d)\n", median(a, rounds), bad["redis"]
    printf "redis store + PostgreSQL:    %8.0f req/s (errors %d)\n", median(b, rounds), bad["exporter"]
    printf "exporter/no-exporter throughput: %.3fx (median of per-round ratios)\n", median(c, rounds)
  }' "$RESULTS"
sort -g "$WORK/lag" 2>/dev/null | awk '{ v[NR] = $1 }
  END { if (NR) { p = int(NR * 0.99); if (p < 1) p = 1
    printf "export lag during the runs: median %.3f s, p99 %.3f s, max %.3f s (%d samples)\n", v[int((NR + 1) / 2)], v[p], v[NR], NR } }'
echo "backlog drained $drain s after the last run; request_records rows: $rows"
