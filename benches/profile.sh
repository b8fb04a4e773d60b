#!/usr/bin/env bash
# Profile one proxied request: `tollgate serve` under callgrind, in front of
# the mock upstream, N non-streamed chat completions from oha (4
# connections). Prints instructions per request (the whole process: server,
# upstream client, wallet actor, runtime) and the tollgate functions that
# cost the most, inclusive, per request.
#
# Usage: benches/profile.sh [N]          (default 5000 requests; ~2 minutes)
#        PROFILE_OUT=/tmp/prof benches/profile.sh   (keep callgrind.out)
#        PROFILE_TOLLGATE_BIN=/path/to/tollgate benches/profile.sh
#        PROFILE_LIMITS='{"spend_limit":"1000000","rpm":1000000000,"tpm":1000000000}' \
#          benches/profile.sh   (the key's limits, Q1-Q2, none by default)
#
# Callgrind, not perf: `perf stat -e instructions true` reports the counter
# as not supported on this VM. Note that valgrind hides SHA-NI, so the key
# hash shows as ~7,000 instructions of software SHA-256 that the real CPU
# does in a few hundred.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${1:-5000}
command -v valgrind >/dev/null && command -v curl >/dev/null && command -v jq >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind curl jq >/dev/null
}
export PATH="$HOME/.cargo/bin:$PATH"
# The load client: oha if installed (`cargo install oha`), else ab from
# apache2-utils (an apt package: no compile; keep-alive, 4 connections).
if ! command -v oha >/dev/null && ! command -v ab >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null
fi
if [[ -n "${PROFILE_TOLLGATE_BIN:-}" ]]; then
  TOLLGATE=$PROFILE_TOLLGATE_BIN
else
  cargo build --release --quiet
  TOLLGATE=target/release/tollgate
fi

WORK=$(mktemp -d /tmp/tollgate-profile.XXXXXX)
OUT=${PROFILE_OUT:-$WORK}
mkdir -p "$OUT"
KEEP_WORK=${PROFILE_OUT:-}
# shellcheck source=benches/lib.sh
source benches/lib.sh
free_port UP; free_port GWP; free_port MP
GW="http://127.0.0.1:$GWP"
OP="profile-operator-$RANDOM$RANDOM"

"$TOLLGATE" mock-upstream --listen "127.0.0.1:$UP" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
TOLLGATE_LISTEN="127.0.0.1:$GWP" TOLLGATE_METRICS_LISTEN="127.0.0.1:$MP" \
TOLLGATE_UPSTREAM_URL="http://127.0.0.1:$UP" TOLLGATE_OPERATOR_TOKEN="$OP" \
TOLLGATE_PRICING=config/pricing.toml \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$TOLLGATE" serve >"$OUT/tollgate.log" 2>&1 &
VG=$!
PIDS+=($VG)
for _ in $(seq 300); do curl -s -o /dev/null "$GW/healthz" && break; sleep 0.2; done

post() { curl -sS "$GW$1" -H 'content-type: application/json' "${@:3}" -d "$2"; }
EMAIL="profile-$RANDOM@example.com"
USER_ID=$(post /api/users "{\"email\":\"$EMAIL\",\"password\":\"profile-password\"}" | jq -r .id)
SESSION=$(post /api/sessions "{\"email\":\"$EMAIL\",\"password\":\"profile-password\"}" | jq -r .token)
post /api/admin/deposits "{\"user_id\":\"$USER_ID\",\"amount\":\"1000000\",\"kind\":\"stripe\"}" \
  -H "authorization: Bearer $OP" -H "Idempotency-Key: p$RANDOM$RANDOM" >/dev/null
NEW_KEY=$(post /api/keys '{"name":"profile"}' -H "authorization: Bearer $SESSION")
KEY=$(jq -r .key <<<"$NEW_KEY")
if [[ -n "${PROFILE_LIMITS:-}" ]]; then
  curl -sS -X PUT "$GW/api/keys/$(jq -r .id <<<"$NEW_KEY")/limits" -H 'content-type: application/json' \
    -H "authorization: Bearer $SESSION" -d "$PROFILE_LIMITS" >/dev/null
fi
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello! Please say hello back."}],"max_tokens":16}'
printf '%s' "$BODY" >"$WORK/body.json"
load() {
  if command -v oha >/dev/null; then
    oha --no-tui -n "$1" -c 4 -m POST -T application/json -H "Authorization: Bearer $KEY" \
      -d "$BODY" "$GW/v1/chat/completions"
  else # ab: report its request counts in oha's status-line shape
    ab -q -k -n "$1" -c 4 -p "$WORK/body.json" -T application/json \
      -H "Authorization: Bearer $KEY" "$GW/v1/chat/completions" |
      awk '/^(Complete requests|Failed requests|Non-2xx responses)/ {print "  [" $0 "]"}'
  fi
}

callgrind_control -i on "$VG" >/dev/null
load 500 >/dev/null                       # warm: pool, caches, metric handles
callgrind_control -z "$VG" >/dev/null
load "$N" | grep -E '^\s+\[' || true      # status code counts
callgrind_control -d "$VG" >/dev/null
sleep 1
DUMP=$(ls -S "$OUT"/callgrind.out.* | head -1)

TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo
echo "instructions per proxied request: $((TOTAL / N)) (whole process, $N requests)"
echo
echo "tollgate functions, inclusive instructions per request:"
callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" 2>/dev/null |
  grep -E '^ *[0-9,]+ .*(/work|src/)[^ ]*\.rs:tollgate::' | grep -v '=>' |
  awk -v n="$N" '{c = $1; gsub(",", "", c); $1 = ""; $2 = ""; sub(/^ +/, ""); sub(/ \[.*$/, "");
                  sub(/^.*\.rs:/, ""); if (!seen[$0]++ && c / n >= 100) printf "%8d  %s\n", c / n, $0}' |
  head -25
echo
echo "callgrind output: $DUMP$([[ -n "${PROFILE_OUT:-}" ]] || echo ' (deleted on exit; set PROFILE_OUT to keep)')"
